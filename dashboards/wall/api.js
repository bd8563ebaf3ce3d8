// REST calls with the signed-in token. The token lives in sessionStorage (one browser tab, gone
// when it closes) or comes from /wall/#token=… (a fragment is never sent to a server).
export function readToken() {
  const frag = new URLSearchParams(location.hash.replace(/^#/, ""));
  const tok = frag.get("token");
  if (tok) {
    sessionStorage.setItem("ioc.token", tok);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem("ioc.token") || "";
}

export class ApiError extends Error {
  constructor(path, status) { super(`${path}: HTTP ${status}`); this.status = status; }
}

export async function api(token, path, body) {
  const init = { headers: { Authorization: `Bearer ${token}` } };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  if (!r.ok) throw new ApiError(path, r.status);
  return r.status === 204 ? null : r.json();
}

// Every device, following the keyset pagination (5000 per page is the API's maximum).
export async function allDevices(token) {
  const out = [];
  let after = "";
  for (;;) {
    const page = await api(token, `/api/v1/devices?limit=5000&with_state=true${after ? `&after=${encodeURIComponent(after)}` : ""}`);
    out.push(...page);
    if (page.length < 5000) return out;
    after = page[page.length - 1].id;
  }
}
