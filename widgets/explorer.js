// Explorer: tabs for models / bids / providers, a sortable table and a filter box. The
// price/score scatter is a plotly FigureWidget that Python shows under this one.

export default {
  render({ model, el }) {
    const root = h("div", { class: "mor-widget mor-explorer", "data-testid": "mor-explorer" });
    el.append(root);
    const tabs = h("div", { class: "mor-tabs" });
    const picker = h("select", { class: "mor-select", title: "model of the bids view" });
    const search = h("input", { class: "mor-input", type: "search", placeholder: "filter…", value: model.get("filter") });
    const refresh = h("button", { class: "mor-button", text: "↻", title: "reload the market" });
    const table = h("table", { class: "mor-table" });
    const [bar, stopBar] = statusBar(model);
    root.append(
      h("div", { class: "mor-toolbar" }, tabs, picker, search, refresh),
      h("div", { class: "mor-tablebox" }, table),
      bar,
    );
    refresh.addEventListener("click", () => model.send({ type: "refresh" }));
    let timer = null;
    search.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        model.set("filter", search.value);
        model.save_changes();
      }, 200);
    });
    search.addEventListener("keydown", (e) => e.stopPropagation());
    picker.addEventListener("change", () => {
      model.set("model", picker.value);
      model.set("view", "bids");
      model.save_changes();
    });

    const drawTabs = () => {
      const counts = model.get("counts") || {};
      tabs.replaceChildren(
        ...["models", "bids", "providers"].map((view) =>
          h("button", {
            class: `mor-tab${model.get("view") === view ? " mor-active" : ""}`,
            "data-view": view,
            onclick: () => {
              model.set("view", view);
              model.save_changes();
            },
          }, view, counts[view] !== undefined ? h("span", { class: "mor-count" }, counts[view]) : null),
        ),
      );
      picker.style.display = model.get("view") === "bids" ? "" : "none";
    };
    const drawPicker = () => {
      const current = model.get("model");
      picker.replaceChildren(
        h("option", { value: "", text: "all models", selected: current === "" }),
        ...model.get("model_names").map((n) => h("option", { value: n, text: n, selected: n === current })),
      );
    };
    const drawTable = () => {
      const columns = model.get("columns");
      const sortBy = model.get("sort_by");
      const desc = model.get("descending");
      const head = h("tr", {}, ...columns.map((c) =>
        h("th", {
          class: `mor-sortable${c.key === sortBy ? " mor-sorted" : ""}`,
          "data-key": c.key,
          title: "sort",
          onclick: () => {
            if (c.key === sortBy) model.set("descending", !desc);
            else {
              model.set("sort_by", c.key);
              model.set("descending", ["num", "int", "pct"].includes(c.kind));
            }
            model.save_changes();
          },
        }, c.label, c.key === sortBy ? (desc ? " ▾" : " ▴") : ""),
      ));
      const view = model.get("view");
      const rows = model.get("rows").map((r) =>
        h("tr", {
          class: view === "models" ? "mor-clickable" : "",
          title: view === "models" ? `show the bids of ${r.name}` : r.id || r.address || "",
          onclick: view === "models" ? () => {
            model.set("model", r.name);
            model.set("view", "bids");
            model.save_changes();
          } : null,
        }, ...columns.map((c) => h("td", { class: `mor-${c.kind}` }, fmt(r[c.key], c.kind)))),
      );
      const empty = rows.length ? [] : [h("tr", {}, h("td", { colspan: columns.length, class: "mor-empty" }, model.get("busy") ? "loading…" : "nothing matches"))];
      table.replaceChildren(h("thead", {}, head), h("tbody", {}, ...rows, ...empty));
    };
    const stops = [
      stopBar,
      follow(model, ["view", "counts"], drawTabs),
      follow(model, ["model_names", "model"], drawPicker),
      follow(model, ["rows", "columns", "sort_by", "descending"], drawTable),
    ];
    return () => stops.forEach((s) => s());
  },
};
