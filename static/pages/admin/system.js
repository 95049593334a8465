// Admin: the server's health (database, schema, integrity, uptime).

import { get } from "../../api.js";
import { h, panel, facts, num, seconds, loadOrFail } from "../../view.js";

const bytes = (n) => (n >= 1048576 ? `${num(n / 1048576, 1)} MiB` : `${num(n / 1024, 1)} KiB`);

export default async function system(ctx) {
  const s = await loadOrFail(ctx, "System health", get("/api/admin/analytics/system-health").then((r) => r.data));
  if (!s) return;
  const db = s.database;
  const check = Array.isArray(db.quick_check) ? db.quick_check.join("; ") : db.quick_check;
  ctx.page(
    "System health",
    h("div", { class: `banner ${s.status === "ok" ? "good" : "warn-100"}`, id: "health-status", text: `Status: ${s.status}` }),
    panel(
      "Server",
      facts([
        ["Version", s.version],
        ["Uptime", seconds(s.uptime_seconds)],
        ["Calls in progress", num(s.runs_in_progress)],
      ]),
    ),
    panel(
      "Database",
      facts([
        ["Integrity (quick_check)", check],
        ["Schema version", `${db.schema_version} (this binary expects ${db.expected_schema_version})`],
        ["SQLite", db.sqlite_version],
        ["File size", bytes(db.size_bytes)],
        ["Write-ahead log", bytes(db.wal_size_bytes)],
        ["Pages", `${num(db.pages)} of ${num(db.page_size)} bytes, ${num(db.free_pages)} free`],
      ]),
    ),
  );
}
