// The JSON API, as every page calls it. Requests go with the session cookie
// (HttpOnly, SameSite=Strict); the browser's Origin header passes the
// server's CSRF check on writes.

export class ApiError extends Error {
  constructor(status, body) {
    const b = body || {};
    super(b.message || `The server answered ${status}`);
    this.status = status;
    this.body = b;
    // [{field, message}] for a 400 on a form: shown beside the fields.
    this.fields = Array.isArray(b.errors) ? b.errors : [];
  }
}

let onSignedOut = () => {};

// Called with no argument when a request finds the session gone.
export function whenSignedOut(fn) {
  onSignedOut = fn;
}

async function answer(res) {
  let data = null;
  try {
    data = await res.json();
  } catch {
    data = null;
  }
  if (!res.ok || !data || data.success === false) {
    if (res.status === 401) onSignedOut();
    throw new ApiError(res.status, data);
  }
  return data;
}

// `api("POST", "/api/agents", {...})` → the whole envelope ({data, pagination, …}).
export async function api(method, path, body) {
  const options = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  return answer(await fetch(path, options));
}

// A query string from an object, leaving out empty values.
export function query(params = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

export const get = (path, params) => api("GET", path + query(params));

// multipart/form-data straight from a form: the browser sets the boundary.
export async function upload(path, formData) {
  return answer(await fetch(path, { method: "POST", body: formData, credentials: "same-origin" }));
}
