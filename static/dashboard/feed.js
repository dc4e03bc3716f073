// One swap's event log, kept gap-free and duplicate-free by sequence number.
//
// Events arrive from the websocket (live) and from `GET /api/swap/{id}/events?after=N` (catch-up after a
// reconnection, or when a gap shows: an event whose seq is not the next one). Only the contiguous run after
// the last delivered seq is delivered; anything at or below it is a duplicate and dropped.

const PAGE = 1000;

export class SwapFeed {
  constructor({ fetchEvents, onEvents }) {
    this.fetchEvents = fetchEvents;
    this.onEvents = onEvents;
    this.swapId = null;
    this.lastSeq = 0;
    this.pending = new Map();
    this.catching = null;
    this.again = false;
  }

  // `startAfter`: the log is shown from seq startAfter + 1 (a tail of a long log).
  reset(swapId, startAfter = 0) {
    this.swapId = swapId;
    this.lastSeq = startAfter;
    this.pending = new Map();
    this.again = false;
  }

  receive(swapId, events) {
    if (swapId !== this.swapId) return;
    for (const event of events) {
      if (event.seq > this.lastSeq) this.pending.set(event.seq, event);
    }
    this.drain();
    if (this.pending.size) this.catchUp().catch(() => {}); // a failed read is retried at the next reconnection
  }

  drain() {
    const ready = [];
    while (this.pending.has(this.lastSeq + 1)) {
      const event = this.pending.get(this.lastSeq + 1);
      this.pending.delete(this.lastSeq + 1);
      this.lastSeq = event.seq;
      ready.push(event);
    }
    for (const seq of this.pending.keys()) if (seq <= this.lastSeq) this.pending.delete(seq);
    if (ready.length) this.onEvents(this.swapId, ready);
  }

  // Fetch everything after the last delivered seq; concurrent calls coalesce into one more round.
  catchUp() {
    if (this.catching) {
      this.again = true;
      return this.catching;
    }
    this.catching = (async () => {
      try {
        do {
          this.again = false;
          const swapId = this.swapId;
          if (!swapId) return;
          for (;;) {
            const events = await this.fetchEvents(swapId, this.lastSeq, PAGE);
            if (swapId !== this.swapId) break;
            for (const event of events) if (event.seq > this.lastSeq) this.pending.set(event.seq, event);
            this.drain();
            if (events.length < PAGE) break;
          }
        } while (this.again);
      } finally {
        this.catching = null;
      }
    })();
    return this.catching;
  }
}
