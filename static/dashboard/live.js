// The dashboard websocket: reconnects with backoff after any drop, and pings so a dead connection is noticed.
// Every (re)connection calls onOpen, where the page resynchronises from the REST API: messages sent while it
// was away are not replayed by the server.

const BACKOFF_MS = [250, 500, 1000, 2000, 4000, 8000];
const PING_EVERY_MS = 20000;
const PONG_WITHIN_MS = 10000;

export class LiveSocket {
  constructor(path, { onMessage, onOpen, onState, onDrop = () => {} }) {
    this.url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`;
    this.onMessage = onMessage;
    this.onOpen = onOpen;
    this.onState = onState;
    this.onDrop = onDrop;
    this.failures = 0;
    this.socket = null;
    this.timer = null;
    this.stopped = false;
    window.addEventListener("online", () => this.reconnectNow());
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.reconnectNow();
    });
  }

  connect() {
    clearTimeout(this.timer);
    this.timer = null;
    if (this.stopped) return;
    this.onState(this.failures ? "reconnecting" : "connecting");
    const socket = new WebSocket(this.url);
    this.socket = socket;
    let pingTimer = null;
    let pongTimer = null;
    socket.addEventListener("open", () => {
      this.failures = 0;
      this.onState("live");
      pingTimer = setInterval(() => {
        if (socket.readyState !== WebSocket.OPEN) return;
        socket.send(JSON.stringify({ type: "ping" }));
        clearTimeout(pongTimer);
        pongTimer = setTimeout(() => socket.close(4000, "no pong"), PONG_WITHIN_MS);
      }, PING_EVERY_MS);
      this.onOpen();
    });
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message && message.kind === "pong") {
        clearTimeout(pongTimer);
        return;
      }
      this.onMessage(message);
    });
    socket.addEventListener("close", (event) => {
      clearInterval(pingTimer);
      clearTimeout(pongTimer);
      if (this.socket !== socket) return;
      this.socket = null;
      if (event.code === 4401) {
        this.stopped = true;
        this.onState("signed-out");
        return;
      }
      const delay = BACKOFF_MS[Math.min(this.failures, BACKOFF_MS.length - 1)];
      this.failures += 1;
      this.onState("reconnecting");
      this.onDrop(this.failures);
      // Jitter spreads the reconnections of many dashboards after a server restart.
      this.timer = setTimeout(() => this.connect(), delay * (0.75 + Math.random() * 0.5));
    });
  }

  // For good (the session ended): no more reconnections.
  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = null;
    if (this.socket) this.socket.close(1000, "stopped");
  }

  reconnectNow() {
    if (!this.stopped && this.socket === null && this.timer !== null) this.connect();
  }
}
