// lipsyncd dashboard: the only script. Re-fetches the live part of the page every 1.5 s and
// swaps it in (no front-end build, no framework); shows times in the viewer's own zone; sends
// the upload page's files one by one, streamed, into a hidden folder of the inbox.
"use strict";

function localTimes(root) {
  for (const t of root.querySelectorAll("time[datetime]")) {
    const d = new Date(t.getAttribute("datetime"));
    if (!isNaN(d)) { t.title = t.textContent; t.textContent = d.toLocaleString([], {dateStyle: "short", timeStyle: "short"}); }
  }
}

function startLive() {
  const box = document.getElementById("live");
  if (!box || !box.dataset.live) return;
  let last = "";
  const refresh = async () => {
    try {
      const r = await fetch(box.dataset.live, {headers: {Accept: "text/html"}, credentials: "same-origin"});
      if (r.ok) {
        const html = await r.text();
        // not while someone types into a field of it (the preview's length): that would reset it
        const typing = box.contains(document.activeElement) && document.activeElement.matches("input, select");
        if (html !== last && !typing) { last = html; box.innerHTML = html; localTimes(box); }
      }
    } catch (e) { /* the service restarts: try again next time */ }
    setTimeout(refresh, 1500);
  };
  setTimeout(refresh, 1500);
}

async function upload(event) {
  event.preventDefault();
  const form = event.target, status = document.getElementById("upload-status");
  const picked = [...document.getElementById("files").files, ...document.getElementById("folder").files];
  if (!picked.length) { status.textContent = "Choose an audio and at least one video first."; return; }
  const say = (text) => { status.textContent = text; };
  const fail = async (r) => { const body = await r.json().catch(() => ({})); say(body.error || `Upload failed (${r.status}).`); };
  let r = await fetch("/upload/start", {method: "POST", credentials: "same-origin"});
  if (!r.ok) return fail(r);
  const id = (await r.json()).id;
  let folderName = "";
  for (const [i, file] of picked.entries()) {
    // A folder's files arrive as "Folder/sub/file": the folder itself is the job.
    const parts = (file.webkitRelativePath || file.name).split("/");
    if (parts.length > 1) folderName = folderName || parts.shift();
    say(`Uploading ${i + 1} of ${picked.length}: ${file.name}`);
    r = await fetch(`/upload/${id}/files/${parts.map(encodeURIComponent).join("/")}`,
                    {method: "PUT", body: file, credentials: "same-origin"});
    if (!r.ok) return fail(r);
  }
  const data = new FormData(form);
  data.delete("files");
  if (!data.get("name")) data.set("name", folderName || picked[0].name.replace(/\.[^.]*$/, ""));
  r = await fetch(`/upload/${id}/finish`, {method: "POST", body: data, credentials: "same-origin"});
  if (!r.ok) return fail(r);
  say((await r.json()).message);
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  startLive();
  const form = document.getElementById("upload");
  if (form) form.addEventListener("submit", upload);
});
