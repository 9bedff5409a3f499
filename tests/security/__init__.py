"""Attacks on records and messages, transport security, secrets, static scans."""
