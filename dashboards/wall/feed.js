// The one websocket (/ws). Resumes with since=<last seq> after a drop, so the server replays
// every missed frame exactly once; reports "stale" when nothing (not even a heartbeat) arrived
// for 2 × heartbeat, because a half-open TCP connection can look open for minutes.
export class Feed {
  constructor(token, { onFrame, onStatus, onReload }) {
    this.token = token;
    this.onFrame = onFrame;      // (frame) => void, for alert/device/readings/incident/kpi
    this.onStatus = onStatus;    // () => void, whenever connected/stale/lastFrame changes
    this.onReload = onReload;    // () => void: history was pruned, reload state over REST
    this.ws = null;
    this.lastSeq = null;
    this.lastFrameAt = 0;        // Date.now() of the last frame of any kind
    this.lastFrameTime = null;   // the server's time of that frame
    this.heartbeatS = 15;
    this.attempts = 0;
    this.authFailed = false;
    this.retry = null;
    this.stopped = false;
  }

  get open() { return this.ws !== null && this.ws.readyState === WebSocket.OPEN; }

  // Seconds since the last frame when over the bound, else 0.
  staleFor(now = Date.now()) {
    const age = now - this.lastFrameAt;
    return this.lastFrameAt && age > 2 * this.heartbeatS * 1000 ? Math.round(age / 1000) : 0;
  }

  connect() {
    clearTimeout(this.retry);
    if (this.stopped) return;
    const url = new URL("/ws", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("token", this.token);
    if (this.lastSeq != null) url.searchParams.set("since", String(this.lastSeq));
    const sock = this.ws = new WebSocket(url);
    sock.onmessage = (ev) => {
      if (sock !== this.ws) return;
      let f;
      try { f = JSON.parse(ev.data); } catch { return; }
      this.lastFrameAt = Date.now();
      this.lastFrameTime = f.time || this.lastFrameTime;
      if (f.type === "hello") {
        this.attempts = 0;
        this.heartbeatS = f.data?.heartbeat_s || this.heartbeatS;
        // First connection: the state before this seq comes over REST.
        if (this.lastSeq == null) { this.lastSeq = f.seq; this.onReload(); }
      } else if (f.type === "heartbeat") {
        this.lastSeq = Math.max(this.lastSeq ?? 0, f.seq);
      } else if (f.type === "resync") {
        this.lastSeq = f.seq;
        // too_slow: the server closes and since=<seq> replays the rest; otherwise the missed
        // history was pruned and only a REST reload is honest.
        if (f.reason !== "too_slow") this.onReload();
      } else {
        this.lastSeq = f.seq;
        this.onFrame(f);
      }
      this.onStatus();
    };
    sock.onclose = (ev) => {
      if (sock !== this.ws) return;
      if (ev.code === 4401 || ev.code === 4403) { this.authFailed = true; this.onStatus(); return; }
      this.attempts += 1;
      const delay = Math.min(10000, 250 * 2 ** Math.min(this.attempts, 6)) * (0.5 + Math.random() / 2);
      this.retry = setTimeout(() => this.connect(), delay);
      this.onStatus();
    };
    sock.onerror = () => {}; // onclose follows
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retry);
    const ws = this.ws; this.ws = null;
    if (ws) ws.close();
  }
}
