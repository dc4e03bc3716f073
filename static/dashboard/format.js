// Times and durations, in the browser's locale; the server's clock is the truth for deadlines.

const absolute = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
});
const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });

export function parseTime(value) {
  if (!value) return null;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

export function formatAbsolute(value) {
  const date = parseTime(value);
  return date ? absolute.format(date) : "–";
}

export function formatClock(value) {
  const date = parseTime(value);
  return date ? clock.format(date) : "";
}

export function formatSpan(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(s % 60).padStart(2, "0")} s`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours} h ${String(m % 60).padStart(2, "0")} min`;
  return `${Math.floor(hours / 24)} days`;
}

export function formatCountdown(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const hours = Math.floor(s / 3600);
  const mm = String(Math.floor((s % 3600) / 60)).padStart(2, "0");
  const ss = String(s % 60).padStart(2, "0");
  return hours ? `${hours}:${mm}:${ss}` : `${mm}:${ss}`;
}

export function formatRelative(value, now = Date.now()) {
  const date = parseTime(value);
  if (!date) return "–";
  const delta = (date.getTime() - now) / 1000;
  if (Math.abs(delta) < 5) return "just now";
  return delta < 0 ? `${formatSpan(-delta)} ago` : `in ${formatSpan(delta)}`;
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 1) return `${Math.max(1, Math.round(seconds * 1000))} ms`; // a quick failure did take some time
  return seconds < 10 ? `${seconds.toFixed(1)} s` : formatSpan(seconds);
}
