// The REST API with the session: same-origin cookies, and the CSRF token on unsafe methods.

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

export class ApiError extends Error {
  constructor(status, detail, data) {
    super(detail);
    this.status = status;
    this.data = data;
  }
}

let onUnauthenticated = () => {};

export function whenSignedOut(callback) {
  onUnauthenticated = callback;
}

// Returns {status, data}; network failures throw ApiError with status 0.
export async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (!["GET", "HEAD"].includes(method)) init.headers["X-CSRFToken"] = csrfToken();
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(`/api${path}`, init);
  } catch (error) {
    throw new ApiError(0, "Spark Control is not reachable", null);
  }
  let data = null;
  if (response.status !== 204) {
    try {
      data = await response.json();
    } catch {
      data = null;
    }
  }
  if (response.status === 401) onUnauthenticated();
  return { status: response.status, ok: response.ok, data };
}

// For reads that must succeed: the data, or an ApiError.
export async function apiGet(path) {
  const { status, ok, data } = await api("GET", path);
  if (!ok) throw new ApiError(status, (data && data.detail) || `GET ${path} answered ${status}`, data);
  return data;
}
