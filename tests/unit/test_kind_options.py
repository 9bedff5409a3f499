"""``@raysys.task`` options: what a kind asks for, checked at registration with one clear error."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import raysys
from raysys.errors import ConfigurationError
from raysys.handlers import KindOptions, get_handler

pytestmark = pytest.mark.unit


def handler(payload: Any, ctx: Any) -> None:
    return None


BAD = {
    "unknown-option": ({"gpus": 1}, "unknown option gpus"),
    "negative-cpus": ({"num_cpus": -1}, "num_cpus must not be negative"),
    "non-numeric-gpus": ({"num_gpus": "one"}, "num_gpus must be a finite number"),
    "fractional-above-one": ({"num_gpus": 1.5}, "whole number"),
    "cpu-in-resources": ({"resources": {"CPU": 2}}, "its own option"),
    "bad-resource-name": ({"resources": {"has space": 1}}, "resource name"),
    "negative-resource": ({"resources": {"special": -2}}, "must not be negative"),
    "memory-not-bytes": ({"memory": 1.5}, "memory must be a whole number"),
    "zero-concurrency": ({"concurrency": 0}, "concurrency must be a whole number"),
    "zero-attempts": ({"max_attempts": 0}, "max_attempts"),
    "negative-timeout": ({"timeout_s": -1}, "timeout_s"),
    "unknown-runtime-env-field": ({"runtime_env": {"pyp": ["x"]}}, "unknown field pyp"),
    "runtime-env-env-vars-not-strings": ({"runtime_env": {"env_vars": {"A": 1}}},
                                         "env_vars must map names to strings"),
    "secret-in-runtime-env": ({"runtime_env": {"env_vars": {"REDIS_PASSWORD": "x"}}},
                              "must not carry REDIS_PASSWORD"),
}


@pytest.mark.parametrize(("options", "says"), BAD.values(), ids=BAD.keys())
def test_a_bad_option_is_one_clear_error_and_registers_nothing(options: dict[str, Any],
                                                               says: str) -> None:
    kind = "bad." + says.split()[0].strip("'")
    with pytest.raises(ConfigurationError, match=says) as caught:
        raysys.task(kind, **options)(handler)
    assert kind in str(caught.value) and get_handler(kind) is None


def test_ray_options_mean_what_they_mean_on_ray_remote() -> None:
    options = KindOptions.build("train", num_gpus=1, memory=2 << 30, resources={"a100": 1},
                                runtime_env={"pip": ["torch"]})
    assert options.remote
    assert options.ray_options() == {"max_retries": 0, "num_gpus": 1, "memory": 2 << 30,
                                     "runtime_env": {"pip": ["torch"]},
                                     "resources": {"a100": 1.0}}
    # a Ray task takes one CPU unless it says otherwise
    assert options.requirement() == {"CPU": 1.0, "GPU": 1.0, "memory": float(2 << 30),
                                     "a100": 1.0}
    assert not KindOptions.build("plain", concurrency=4).remote


def test_the_decorator_works_bare_and_knows_async_handlers() -> None:
    @raysys.task
    def shape_bare(payload: Any, ctx: Any) -> int:
        return 1

    @raysys.task("shape.async", concurrency=8)
    async def shape_async(payload: Any, ctx: Any) -> int:
        await asyncio.sleep(0)
        return 2

    bare, coro = get_handler("shape_bare"), get_handler("shape.async")
    assert bare is not None and not bare.is_async and bare.max_attempts == 3
    assert coro is not None and coro.is_async and coro.options.concurrency == 8
    assert shape_bare(None, None) == 1  # the function itself is returned unchanged
