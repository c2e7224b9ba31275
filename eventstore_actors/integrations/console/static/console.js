// The $all tail: new events arrive as server-sent events and are added on top of the table.
// Every value is set with textContent, never parsed as HTML: event data is untrusted.
"use strict";
(function () {
  const table = document.getElementById("tail");
  if (!table || !window.EventSource) {
    return;
  }
  const body = table.tBodies[0];
  const status = document.getElementById("tail-status");
  const base = table.dataset.base || "";
  const keep = 200;
  const say = function (text) {
    if (status) {
      status.textContent = text;
    }
  };
  const cell = function (row, text) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "–" : String(text);
    row.appendChild(td);
    return td;
  };
  const show = function (message) {
    const event = JSON.parse(message.data);
    const row = document.createElement("tr");
    row.className = "new";
    row.dataset.eventId = String(event.event_id);
    cell(row, event.event_id);
    const stream = cell(row, "");
    const a = document.createElement("a");
    a.href = base + "/streams/" + encodeURIComponent(event.stream_uuid);
    a.textContent = event.stream_uuid;
    stream.appendChild(a);
    cell(row, event.stream_version);
    cell(row, event.event_type);
    cell(row, event.created_at ? event.created_at.slice(0, 23).replace("T", " ") : null);
    const data = cell(row, "");
    if (event.forgotten) {
      data.textContent = "forgotten";
      data.className = "mark";
    } else if (event.unreadable) {
      data.textContent = "encrypted";
      data.className = "mark";
    } else {
      const code = document.createElement("code");
      let text = JSON.stringify(event.data);
      if (text.length > 200) {
        text = text.slice(0, 199) + "…";
      }
      code.textContent = text;
      data.appendChild(code);
    }
    body.insertBefore(row, body.firstChild);
    while (body.rows.length > keep) {
      body.deleteRow(body.rows.length - 1);
    }
  };
  const source = new EventSource(
    table.dataset.source + "?after=" + encodeURIComponent(table.dataset.after || "")
  );
  source.addEventListener("open", function () {
    say("live");
  });
  source.addEventListener("error", function () {
    say("reconnecting…");
  });
  source.addEventListener("event", show);
})();
