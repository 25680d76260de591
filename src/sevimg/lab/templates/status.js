// sevimg serve's status page: polls /status.json and redraws the jobs table.
// Every value goes in as text (textContent), never as HTML: clients and notes are data.
"use strict";

const POLL_MS = 2000;

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function link(parent, href, text) {
  const a = document.createElement("a");
  a.href = href;
  a.textContent = text;
  parent.appendChild(a);
}

function draw(status) {
  const body = document.querySelector("#jobs tbody");
  const rows = [];
  for (const job of status.jobs) {
    const row = document.createElement("tr");
    row.dataset.job = job.job;
    cell(row, job.icon + " " + job.state, "state state-" + job.state);
    cell(row, job.image);
    cell(row, job.client || "");
    cell(row, job.sent_text, "num");
    cell(row, job.assigned_text);
    cell(row, job.booted_text);
    cell(row, job.reported_text);
    const result = cell(row, "");
    if (job.result) link(result, "/results/" + encodeURIComponent(job.result), job.result);
    cell(row, job.note || "");
    rows.push(row);
  }
  body.replaceChildren(...rows);
  const list = document.getElementById("results");
  const items = status.results.map((name) => {
    const li = document.createElement("li");
    link(li, "/results/" + encodeURIComponent(name), name);
    return li;
  });
  list.replaceChildren(...items);
  document.getElementById("counts").textContent = status.counts;
  document.getElementById("updated").textContent = "updated " + status.now;
}

async function poll() {
  try {
    const answer = await fetch("/status.json", { cache: "no-store" });
    if (!answer.ok) throw new Error("HTTP " + answer.status);
    draw(await answer.json());
  } catch (error) {
    document.getElementById("updated").textContent = "not reachable (" + error.message + ")";
  }
  setTimeout(poll, POLL_MS);
}

document.addEventListener("DOMContentLoaded", poll);
