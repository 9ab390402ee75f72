// tcpstack dashboard: the connection table over server-sent events, and the
// drawings (made by the daemon as SVG) of the connection selected. No libraries.
"use strict";

const $ = (id) => document.getElementById(id);
let selected = null;
let refresh = null;

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "-" : String(text);
  if (cls) td.className = cls;
  tr.appendChild(td);
}

function options(r) {
  const parts = [];
  if (r.sack) parts.push("sack");
  if (r.ts) parts.push("ts");
  if (r.wscale) parts.push("ws " + r.wscale.join("/"));
  return parts.join(" ");
}

function renderTable(snap) {
  const body = document.querySelector("#connections tbody");
  const rows = [];
  for (const r of snap.rows) {
    const tr = document.createElement("tr");
    tr.dataset.id = r.id;
    tr.dataset.remote = r.remote;
    if (r.id === selected) tr.className = "selected";
    cell(tr, r.id); cell(tr, r.state, "state"); cell(tr, r.local, "addr");
    cell(tr, r.remote, "addr"); cell(tr, r.recv_q); cell(tr, r.send_q);
    cell(tr, r.rtt_ms); cell(tr, r.rto_ms); cell(tr, r.cwnd); cell(tr, r.ssthresh);
    cell(tr, r.bytes_acked); cell(tr, r.bytes_received); cell(tr, r.retrans);
    cell(tr, options(r)); cell(tr, r.age_s);
    tr.addEventListener("click", () => select(r.id, r.remote + " ⇄ " + r.local));
    rows.push(tr);
  }
  body.replaceChildren(...rows);
  const items = [];
  for (const l of snap.recent) {
    const li = document.createElement("li");
    li.className = l.outcome === "refused" ? "refused" : (l.outcome === "reset" ? "reset" : "");
    li.dataset.id = l.id;
    li.textContent = `#${l.id} ${l.phase} ${l.remote} → ${l.local}: ${l.outcome}` +
      (l.why ? ` (${l.why})` : "");
    li.addEventListener("click", () => select(l.id, `${l.remote} → ${l.local}`));
    items.push(li);
  }
  $("recent").replaceChildren(...items);
  $("summary").textContent = `${snap.connections} connection(s), ` +
    `${snap.listeners.length} listener(s)`;
}

async function load(id, what, target) {
  const r = await fetch(`/api/conn/${id}/${what}`);
  if (!r.ok) return;
  const text = await r.text();
  if (selected === id) $(target).innerHTML = text;  // SVG drawn and escaped by the daemon
}

function drawSelected() {
  if (selected === null) return;
  load(selected, "ladder.svg", "ladder");
  load(selected, "tseq.svg?dir=" + $("direction").value, "tseq");
  load(selected, "cc.svg", "cc");
}

function select(id, title) {
  selected = id;
  $("detail").hidden = false;
  $("detail-title").textContent = `Connection #${id}: ${title}`;
  for (const tr of document.querySelectorAll("#connections tbody tr")) {
    tr.className = Number(tr.dataset.id) === id ? "selected" : "";
  }
  history.replaceState(null, "", "#conn=" + id);
  drawSelected();
  if (refresh) clearInterval(refresh);
  refresh = setInterval(drawSelected, 2000);
}

function start() {
  $("direction").addEventListener("change", drawSelected);
  const m = location.hash.match(/conn=(\d+)/);
  if (m) select(Number(m[1]), "");
  const events = new EventSource("/api/events");
  events.onopen = () => { $("status").textContent = "live"; $("status").className = "live"; };
  events.onerror = () => { $("status").textContent = "reconnecting…"; $("status").className = "down"; };
  events.onmessage = (e) => renderTable(JSON.parse(e.data));
}

document.addEventListener("DOMContentLoaded", start);
