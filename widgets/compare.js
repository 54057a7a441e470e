// Compare: the prompt, a Run button, and one column per provider filling in live with its
// metrics and answer.

const METRICS = [
  ["ttft_s", "TTFT", (v) => fmt(v, "s")],
  ["tokens_per_s", "tok/s", fmtNum],
  ["e2e_s", "end to end", (v) => fmt(v, "s")],
  ["completion_tokens", "tokens", (v) => fmt(v, "int")],
  ["cost_mor", "cost MOR", fmtMor],
];

export default {
  render({ model, el }) {
    const root = h("div", { class: "mor-widget mor-compare", "data-testid": "mor-compare" });
    el.append(root);
    const title = h("span", { class: "mor-title" });
    const prompt = h("textarea", { class: "mor-input mor-prompt", rows: 2, "data-testid": "compare-prompt" });
    const run = h("button", { class: "mor-button mor-primary", text: "Run", "data-testid": "compare-run" });
    const grid = h("div", { class: "mor-grid", "data-testid": "compare-grid" });
    const [bar, stopBar] = statusBar(model);
    root.append(h("div", { class: "mor-toolbar" }, title), h("div", { class: "mor-compose" }, prompt, run), grid, bar);
    prompt.addEventListener("keydown", (e) => e.stopPropagation());
    run.addEventListener("click", () => model.send({ type: "run", prompt: prompt.value }));

    const drawHead = () => {
      title.textContent = `${model.get("model")} · same prompt, every provider`;
      if (document.activeElement !== prompt) prompt.value = model.get("prompt");
      run.disabled = model.get("running");
      run.textContent = model.get("running") ? "running…" : "Run";
    };
    const drawGrid = () => {
      const rows = model.get("rows");
      const best = {};
      for (const [key] of METRICS) {
        const values = rows.map((r) => r[key]).filter((v) => v !== null && v !== undefined);
        if (values.length > 1) best[key] = key === "tokens_per_s" ? Math.max(...values) : key === "completion_tokens" ? null : Math.min(...values);
      }
      grid.style.gridTemplateColumns = `repeat(${Math.max(rows.length, 1)}, minmax(180px, 1fr))`;
      grid.replaceChildren(
        ...rows.map((r) =>
          h("div", { class: `mor-card mor-${r.state}`, "data-provider": r.provider, "data-state": r.state },
            h("div", { class: "mor-cardhead" },
              h("span", { class: "mor-code", title: r.provider }, r.provider_short),
              h("span", { class: "mor-badge" }, r.state),
            ),
            h("div", { class: "mor-caption" }, `${fmtMor(r.price_per_hour)} MOR/h · score ${fmtNum(r.score)}`),
            h("table", { class: "mor-metrics" },
              ...METRICS.map(([key, label, f]) =>
                h("tr", {}, h("th", {}, label), h("td", { class: best[key] !== undefined && best[key] !== null && r[key] === best[key] ? "mor-best" : "", "data-metric": key }, f(r[key]))),
              ),
            ),
            r.error ? h("div", { class: "mor-error" }, r.error) : null,
            h("div", { class: "mor-answer", "data-testid": "compare-answer" }, r.text || (r.state === "done" ? "(empty)" : "…")),
          ),
        ),
      );
      if (!rows.length) grid.append(h("div", { class: "mor-empty" }, model.get("running") ? "finding bids…" : "press Run"));
    };
    const stops = [
      stopBar,
      follow(model, ["model", "prompt", "running"], drawHead),
      follow(model, ["rows", "running"], drawGrid),
    ];
    return () => stops.forEach((s) => s());
  },
};
