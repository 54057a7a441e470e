// Chat: model and provider pickers, a session countdown, the streamed history with a footer
// under each answer, a prompt box with Send and Stop.

export default {
  render({ model, el }) {
    const root = h("div", { class: "mor-widget mor-chat", "data-testid": "mor-chat" });
    el.append(root);
    const modelPick = h("select", { class: "mor-select", title: "model", "data-testid": "chat-model" });
    const bidPick = h("select", { class: "mor-select", title: "provider", "data-testid": "chat-provider" });
    const sessionBox = h("span", { class: "mor-session", "data-testid": "chat-session" });
    const endButton = h("button", { class: "mor-button mor-quiet", text: "end session", title: "close the session now (the unused stake comes back)" });
    const clearButton = h("button", { class: "mor-button mor-quiet", text: "clear", title: "forget the history" });
    const log = h("div", { class: "mor-log", "data-testid": "chat-log" });
    const input = h("textarea", { class: "mor-input mor-prompt", rows: 2, placeholder: "Ask something… (Enter sends, Shift+Enter new line)", "data-testid": "chat-input" });
    const send = h("button", { class: "mor-button mor-primary", text: "Send", "data-testid": "chat-send" });
    const stop = h("button", { class: "mor-button mor-danger", text: "Stop", "data-testid": "chat-stop" });
    const [bar, stopBar] = statusBar(model);
    root.append(
      h("div", { class: "mor-toolbar" }, modelPick, bidPick, sessionBox, endButton, clearButton),
      log,
      h("div", { class: "mor-compose" }, input, send, stop),
      bar,
    );

    const submit = () => {
      const prompt = input.value.trim();
      if (!prompt) return;
      model.send({ type: "send", prompt });
      input.value = "";
    };
    send.addEventListener("click", submit);
    stop.addEventListener("click", () => model.send({ type: "stop" }));
    endButton.addEventListener("click", () => model.send({ type: "end_session" }));
    clearButton.addEventListener("click", () => model.send({ type: "clear" }));
    input.addEventListener("keydown", (e) => {
      e.stopPropagation(); // keep JupyterLab's notebook shortcuts out of the prompt box
      if (e.key === "Enter" && !e.shiftKey) {
        e.preventDefault();
        submit();
      }
    });
    modelPick.addEventListener("change", () => {
      model.set("model", modelPick.value);
      model.save_changes();
    });
    bidPick.addEventListener("change", () => {
      model.set("bid", bidPick.value);
      model.save_changes();
    });

    const drawModels = () => {
      const current = model.get("model");
      const names = model.get("model_names");
      const options = names.includes(current) || !current ? names : [current, ...names];
      modelPick.replaceChildren(...options.map((n) => h("option", { value: n, text: n, selected: n === current })));
    };
    const drawBids = () => {
      const current = model.get("bid");
      bidPick.replaceChildren(
        h("option", { value: "", text: "best provider", selected: !current }),
        ...model.get("bids").map((b) =>
          h("option", { value: b.id, selected: b.id === current }, `${b.provider_short} · ${fmtMor(b.price_per_hour)} MOR/h · score ${fmtNum(b.score)}`),
        ),
      );
    };
    let seenAt = Date.now();
    const tick = () => {
      const s = model.get("session");
      if (!s || !s.id) {
        sessionBox.textContent = "no session yet";
        sessionBox.classList.remove("mor-ending");
        endButton.disabled = true;
        return;
      }
      const left = secondsLeft(s.ends_at, s.now, seenAt);
      sessionBox.textContent = `session ${s.id_short} · ${s.provider_short} · ${left ? `${clock(left)} left` : "ended"}`;
      sessionBox.title = `${s.id}\nprovider ${s.provider}\n${fmtMor(s.price_per_hour)} MOR/h`;
      sessionBox.classList.toggle("mor-ending", left < 60);
      endButton.disabled = false;
    };
    const drawSession = () => {
      seenAt = Date.now();
      tick();
    };
    const timer = setInterval(tick, 1000);
    // A reasoning model's thinking: folded above its answer, unfolded while it is all there
    // is; a block the user opened or closed stays so through redraws (by message index).
    const unfolded = new Map();
    const reasoningBlock = (m, i) => {
      if (!m.reasoning) return null;
      const open = unfolded.has(i) ? unfolded.get(i) : Boolean(m.streaming && !m.content);
      const block = h("details", { class: "mor-reasoning", open, "data-testid": "chat-reasoning" },
        h("summary", { class: "mor-reasoning-title" }, m.streaming && !m.content ? "thinking…" : "reasoning"),
        h("div", { class: "mor-reasoning-text" }, m.reasoning),
      );
      block.firstChild.addEventListener("click", () => unfolded.set(i, !block.open));
      return block;
    };
    const drawMessages = () => {
      const stick = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
      const messages = model.get("messages");
      if (!messages.length) unfolded.clear();
      log.replaceChildren(
        ...messages.map((m, i) =>
          h("div", { class: `mor-msg mor-${m.role}${m.streaming ? " mor-streaming" : ""}`, "data-role": m.role },
            h("div", { class: "mor-role" }, m.role === "user" ? "you" : m.role === "error" ? "error" : "assistant"),
            reasoningBlock(m, i),
            h("div", { class: "mor-content", "data-testid": `chat-${m.role}` }, m.content || (m.streaming && !m.reasoning ? "…" : "")),
            m.footer ? h("div", { class: "mor-footer", "data-testid": "chat-footer" }, m.footer) : null,
          ),
        ),
      );
      if (!messages.length) log.append(h("div", { class: "mor-empty" }, "Answers stream in here, each with who answered, how fast and at what cost."));
      if (stick) log.scrollTop = log.scrollHeight;
    };
    const drawBusy = () => {
      const streaming = model.get("messages").some((m) => m.streaming);
      stop.style.display = streaming ? "" : "none";
      send.disabled = streaming;
    };
    const stops = [
      stopBar,
      follow(model, ["model_names", "model"], drawModels),
      follow(model, ["bids", "bid"], drawBids),
      follow(model, ["session"], drawSession),
      follow(model, ["messages"], drawMessages),
      follow(model, ["messages", "busy"], drawBusy),
      () => clearInterval(timer),
    ];
    return () => stops.forEach((s) => s());
  },
};
