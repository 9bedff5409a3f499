/* raysys console: the HTTP API, with the operator's token.
 *
 * The token lives in sessionStorage (this tab only; gone when it closes) and is sent as
 * "Authorization: Bearer <token>" to this origin only (the page's CSP allows no other).
 * Errors come back from the API as {"detail": [{"loc"?, "msg"}]}: apiCall() throws an
 * ApiError carrying those messages, or Unauthorized for a 401 (the console then asks for the
 * token again).
 */

const TOKEN_KEY = "raysys.console.token";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export class Unauthorized extends ApiError {}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function saveToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** The messages of an error body, one line: "kind: String should match pattern ..." */
function detailText(doc) {
  const items = doc && Array.isArray(doc.detail) ? doc.detail : [];
  return items.map((item) => {
    const loc = Array.isArray(item.loc) ? item.loc.filter((p) => p !== "body").join(".") : "";
    return loc ? `${loc}: ${item.msg}` : String(item.msg);
  }).join("; ");
}

async function send(method, path, body, withToken) {
  const headers = {Accept: "application/json"};
  if (withToken) headers.Authorization = `Bearer ${token() || ""}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  try {
    return await fetch(path, {method, headers, cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body)});
  } catch (err) {
    throw new ApiError(0, `${method} ${path}: the server is not answering (${err.message})`);
  }
}

/** The JSON answer of `method path` (with the token); throws ApiError / Unauthorized. */
export async function apiCall(method, path, body) {
  const resp = await send(method, path, body, true);
  const doc = await resp.json().catch(() => null);
  if (resp.status === 401) {
    throw new Unauthorized(401, detailText(doc) || "missing or wrong bearer token");
  }
  if (!resp.ok) {
    throw new ApiError(resp.status,
      `${method} ${path}: ${resp.status} ${detailText(doc) || resp.statusText}`);
  }
  return doc;
}

/** GET /health (open): its body whatever the status (503 is "unhealthy", still a report). */
export async function health() {
  const resp = await send("GET", "/health", undefined, false);
  const doc = await resp.json().catch(() => null);
  if (!doc || typeof doc.status !== "string") {
    throw new ApiError(resp.status, `GET /health: ${resp.status} ${resp.statusText}`);
  }
  return doc;
}
