// Helpers shared by the mor-workbench widgets. Python joins this file in front of each
// widget's module (anywidget loads one ES module per widget, with no relative imports).

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fmt(value, kind) {
  if (value === undefined || value === null || value === "") return "–";
  switch (kind) {
    case "int":
      return Number(value).toLocaleString("en-US", { maximumFractionDigits: 0 });
    case "mor":
      return fmtMor(value);
    case "num":
      return fmtNum(value);
    case "pct":
      return `${(100 * value).toFixed(0)}%`;
    case "s":
      return `${Number(value).toFixed(2)} s`;
    default:
      return String(value);
  }
}

function fmtNum(value) {
  const v = Number(value);
  if (!Number.isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a >= 1e6) return v.toExponential(2);
  if (a >= 100) return v.toLocaleString("en-US", { maximumFractionDigits: 0 });
  if (a >= 1) return v.toFixed(2);
  if (a === 0) return "0";
  return v.toPrecision(2);
}

function fmtMor(value) {
  const v = Number(value);
  if (!Number.isFinite(v)) return "–";
  if (v === 0) return "0";
  if (Math.abs(v) >= 1000) return v.toLocaleString("en-US", { maximumFractionDigits: 0 });
  if (Math.abs(v) >= 1) return v.toFixed(3);
  return v.toPrecision(3);
}

// Seconds left until `endsAt` on the chain's clock, given the chain time `now` seen at `seenAt`.
function secondsLeft(endsAt, now, seenAt) {
  return Math.max(0, Math.round(endsAt - now - (Date.now() - seenAt) / 1000));
}

function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const hh = Math.floor(s / 3600);
  const mm = String(Math.floor((s % 3600) / 60)).padStart(2, "0");
  const ss = String(s % 60).padStart(2, "0");
  return hh ? `${hh}:${mm}:${ss}` : `${mm}:${ss}`;
}

// The one-line status/error bar every widget shows; it follows the model's traits.
function statusBar(model) {
  const bar = h("div", { class: "mor-statusbar", "data-testid": "status" });
  const update = () => {
    const error = model.get("error");
    const status = model.get("status");
    bar.replaceChildren();
    if (error) {
      bar.append(
        h("span", { class: "mor-error", title: error, "data-testid": "error" }, `⚠ ${error}`),
        h("button", {
          class: "mor-link",
          title: "dismiss",
          text: "×",
          onclick: () => {
            model.set("error", "");
            model.save_changes();
          },
        }),
      );
    } else if (status) {
      bar.append(h("span", { class: "mor-status" }, status));
    } else if (model.get("busy")) {
      bar.append(h("span", { class: "mor-status" }, "working…"));
    }
  };
  model.on("change:error", update);
  model.on("change:status", update);
  model.on("change:busy", update);
  update();
  const stop = () => {
    model.off("change:error", update);
    model.off("change:status", update);
    model.off("change:busy", update);
  };
  return [bar, stop];
}

// Run `fn` now and whenever one of `names` changes; returns a function that stops listening.
function follow(model, names, fn) {
  for (const name of names) model.on(`change:${name}`, fn);
  fn();
  return () => {
    for (const name of names) model.off(`change:${name}`, fn);
  };
}
