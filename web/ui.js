// The conversation log and the agent's state, both driven by server events.

const NO_REPLY_AFTER_MS = 6000; // a turn with no transcript by then had no words in it
const INTERRUPTED_SHOW_MS = 1200;

export const STATE_LABELS = {
  idle: "Ready",
  connecting: "Connecting…",
  listening: "Listening",
  "user speaking": "You are speaking",
  thinking: "Thinking…",
  waiting: "Waiting for you to finish…",
  speaking: "Speaking",
  paused: "Paused: listening to you",
  interrupted: "Interrupted",
};

const STAGES = [
  ["endpoint_ms", "end of speech detected"],
  ["stt_done_ms", "transcribed"],
  ["llm_first_token_ms", "first token"],
  ["first_chunk_ms", "first phrase ready"],
  ["tts_first_audio_ms", "first audio synthesized"],
  ["first_frame_sent_ms", "first audio sent"],
];

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Speech text as one paragraph: models sometimes emit runs of newlines. */
function tidy(text) {
  return text.replace(/\s+/g, " ").trimStart();
}

function ms(value) {
  return `${Math.round(value)} ms`;
}

/** Derives what the agent is doing from the event stream and says it on the page. */
export class AgentState {
  constructor(onChange) {
    this.onChange = onChange;
    this.active = false;
    this.userSpeaking = false;
    this.agentSpeaking = false;
    this.thinking = false;
    this.waiting = false;
    this.interruptedUntil = 0;
    this.thinkingTimer = null;
    this.flashTimer = null;
    this.current = "idle";
  }

  reset(active) {
    this.active = active;
    this.userSpeaking = this.agentSpeaking = this.thinking = this.waiting = false;
    this.interruptedUntil = 0;
    clearTimeout(this.thinkingTimer);
    clearTimeout(this.flashTimer);
    this.#publish(active ? "listening" : "idle");
  }

  connecting() {
    this.#publish("connecting");
  }

  handle(event) {
    switch (event.type) {
      case "user_speech_start":
        this.userSpeaking = true;
        this.waiting = false;
        break;
      case "user_speech_end":
        this.userSpeaking = false;
        if (!this.agentSpeaking) this.#startThinking();
        break;
      case "turn_pending":
        // The pause did not sound (or read) like the end of the turn: the agent waits.
        this.waiting = true;
        this.#stopThinking();
        break;
      case "transcript":
        this.waiting = false;
        this.#startThinking(); // a reply is coming: no more timeout
        clearTimeout(this.thinkingTimer);
        break;
      case "agent_speech_start":
        this.#stopThinking();
        this.agentSpeaking = true;
        this.interruptedUntil = 0; // a new reply has started: the interruption is over
        break;
      case "agent_speech_end":
        this.agentSpeaking = false;
        break;
      case "interrupted":
        if (event.resumed) break; // a noise or a backchannel: the agent went on
        this.#stopThinking();
        this.agentSpeaking = false;
        this.interruptedUntil = performance.now() + INTERRUPTED_SHOW_MS;
        clearTimeout(this.flashTimer);
        this.flashTimer = setTimeout(() => this.#update(), INTERRUPTED_SHOW_MS);
        break;
      case "turn_metrics":
      case "error":
        this.#stopThinking();
        if (event.type === "error") this.agentSpeaking = false;
        break;
      default:
        return;
    }
    this.#update();
  }

  #startThinking() {
    this.thinking = true;
    clearTimeout(this.thinkingTimer);
    this.thinkingTimer = setTimeout(() => {
      this.thinking = false;
      this.#update();
    }, NO_REPLY_AFTER_MS);
  }

  #stopThinking() {
    this.thinking = false;
    clearTimeout(this.thinkingTimer);
  }

  #update() {
    if (!this.active) return;
    let state = "listening";
    if (performance.now() < this.interruptedUntil) state = "interrupted";
    else if (this.userSpeaking && this.agentSpeaking) state = "paused";
    else if (this.userSpeaking) state = "user speaking";
    else if (this.agentSpeaking) state = "speaking";
    else if (this.waiting) state = "waiting";
    else if (this.thinking) state = "thinking";
    this.#publish(state);
  }

  #publish(state) {
    if (state === this.current) return;
    this.current = state;
    this.onChange(state);
  }
}

/** The conversation as bubbles, one pair per turn. */
export class ConversationLog {
  constructor(list, emptyNote, clearButton) {
    this.list = list;
    this.emptyNote = emptyNote;
    this.clearButton = clearButton;
    this.turns = new Map();
    this.pendingTimer = null;
    clearButton.addEventListener("click", () => this.clear());
  }

  clear() {
    this.list.replaceChildren();
    this.turns.clear();
    this.#changed();
  }

  handle(event) {
    const turn = event.turn;
    switch (event.type) {
      case "user_speech_start":
        this.#userBubble(turn, true);
        break;
      case "user_speech_end":
        clearTimeout(this.pendingTimer);
        this.pendingTimer = setTimeout(() => this.#dropPendingUser(), NO_REPLY_AFTER_MS);
        break;
      case "transcript": {
        const bubble = this.#userBubble(turn, false);
        bubble.text.textContent = event.text;
        bubble.item.classList.remove("pending", "waiting");
        bubble.item.setAttribute("aria-busy", "false");
        break;
      }
      case "agent_text": {
        const bubble = this.#agentBubble(turn);
        bubble.full += event.delta;
        if (!bubble.cut) bubble.text.textContent = tidy(bubble.full);
        break;
      }
      case "agent_speech_start":
        this.#agentBubble(turn).item.classList.add("speaking");
        break;
      case "agent_speech_end":
        this.#finishAgent(turn);
        break;
      case "interrupted":
        if (event.resumed) this.#resumed(turn);
        else if (!event.heard && !event.false_interruption) this.#takeBack(turn);
        else this.#interrupt(turn, event.heard || "", Boolean(event.false_interruption));
        break;
      case "turn_pending":
        this.#userBubble(turn, true).item.classList.add("waiting");
        break;
      case "turn_metrics":
        this.#metrics(turn, event);
        break;
      case "error":
        this.#note(`Error${turn != null ? ` in turn ${turn}` : ""}: ${event.message}`, "error");
        break;
      default:
        return;
    }
    this.#scroll();
  }

  /** Closes the conversation's open bubbles when the session ends. */
  settle() {
    clearTimeout(this.pendingTimer);
    this.#dropPendingUser();
    for (const t of this.turns.values()) {
      if (t.agent) t.agent.item.classList.remove("streaming", "speaking");
    }
  }

  note(text, kind = "info") {
    this.#note(text, kind);
    this.#scroll();
  }

  #entry(turn) {
    let entry = this.turns.get(turn);
    if (!entry) {
      entry = { user: null, agent: null };
      this.turns.set(turn, entry);
    }
    return entry;
  }

  #userBubble(turn, pending) {
    const entry = this.#entry(turn);
    if (!entry.user) {
      const item = el("li", "bubble user");
      item.append(el("span", "who", "You"));
      const text = el("p", "text");
      item.append(text);
      if (pending) {
        item.classList.add("pending");
        item.setAttribute("aria-busy", "true");
        text.append(el("span", "dots"));
        text.firstChild.append(el("i"), el("i"), el("i"));
        text.setAttribute("aria-label", "listening");
      }
      // The agent's reply to this turn (if already here) stays after it.
      if (entry.agent) this.list.insertBefore(item, entry.agent.item);
      else this.list.append(item);
      entry.user = { item, text };
      this.#changed();
    } else if (!pending) {
      entry.user.text.removeAttribute("aria-label");
    }
    return entry.user;
  }

  #dropPendingUser() {
    for (const [turn, entry] of this.turns) {
      if (entry.user && entry.user.item.classList.contains("pending")) {
        entry.user.item.remove();
        entry.user = null;
        if (!entry.agent) this.turns.delete(turn);
      }
    }
    this.#changed();
  }

  #agentBubble(turn) {
    const entry = this.#entry(turn);
    if (!entry.agent) {
      const item = el("li", "bubble agent streaming");
      item.append(el("span", "who", "Agent"));
      const text = el("p", "text");
      item.append(text);
      const meta = el("div", "meta");
      item.append(meta);
      this.list.append(item);
      entry.agent = { item, text, meta, full: "", cut: false };
      this.#changed();
    }
    return entry.agent;
  }

  #finishAgent(turn) {
    const entry = this.turns.get(turn);
    if (entry && entry.agent) entry.agent.item.classList.remove("streaming", "speaking");
  }

  /** The user went on before hearing the reply: it was one turn, answered again. */
  #takeBack(turn) {
    const entry = this.turns.get(turn);
    if (!entry) return;
    if (entry.agent) entry.agent.item.remove();
    entry.agent = null;
    if (entry.user) {
      entry.user.item.classList.add("pending");
      entry.user.item.setAttribute("aria-busy", "true");
    }
    this.#changed();
  }

  /** A sound paused the agent, which then went on where it was. */
  #resumed(turn) {
    const bubble = this.turns.get(turn)?.agent;
    if (!bubble) return;
    bubble.meta.querySelector(".badge-resumed")?.remove();
    const badge = el("span", "badge badge-resumed", "went on after a noise");
    badge.title = "A sound paused the agent (a cough, \"mm-hm\", its own echo); it was not you taking the turn, so it went on.";
    bubble.meta.prepend(badge);
  }

  #interrupt(turn, heard, falseInterruption) {
    const bubble = this.#agentBubble(turn);
    bubble.cut = true;
    bubble.item.classList.remove("streaming", "speaking");
    bubble.item.classList.add("interrupted");
    heard = tidy(heard).trim();
    const full = tidy(bubble.full);
    bubble.text.textContent = heard;
    if (!heard) bubble.text.append(el("em", "nothing", "(interrupted before it spoke)"));
    const unheard = full.slice(heard.length).trim();
    if (heard && unheard && full.startsWith(heard)) {
      const rest = el("span", "unheard", ` ${unheard}`);
      rest.setAttribute("aria-hidden", "true");
      rest.title = "Not spoken: cut off by the interruption";
      bubble.text.append(rest);
    }
    bubble.meta.querySelector(".badge-interrupted")?.remove();
    const badge = el("span", "badge badge-interrupted", falseInterruption ? "paused by a noise" : "interrupted");
    badge.title = falseInterruption
      ? "A short sound stopped the agent; it was not a turn."
      : "You spoke over the agent; it stopped here.";
    bubble.meta.prepend(badge);
  }

  #metrics(turn, m) {
    const entry = this.turns.get(turn);
    const host = entry?.agent?.meta ?? entry?.user?.item;
    if (!host) return;
    host.querySelector(".latency")?.remove();
    const details = el("details", "latency");
    const summary = el("summary");
    const first = m.first_frame_sent_ms;
    summary.textContent = first != null ? `first audio ${ms(first)}` : "no audio";
    const lines = [];
    const table = el("dl", "stages");
    for (const [key, label] of STAGES) {
      if (m[key] == null) continue;
      table.append(el("dt", null, label), el("dd", null, ms(m[key])));
      lines.push(`${label}: ${ms(m[key])}`);
    }
    if (m.llm_queue_wait_ms) {
      table.append(el("dt", null, "waited for the model"), el("dd", null, ms(m.llm_queue_wait_ms)));
      lines.push(`waited for the model: ${ms(m.llm_queue_wait_ms)}`);
    }
    if (m.prompt_tokens != null) {
      const evaluated = m.prompt_tokens_evaluated ?? m.prompt_tokens;
      const tokens = `${evaluated} of ${m.prompt_tokens} prompt, ${m.completion_tokens ?? 0} reply`;
      table.append(el("dt", null, "tokens"), el("dd", null, tokens));
      lines.push(`tokens: ${tokens}`);
    }
    summary.title = `Measured by the server, after the end of your speech:\n${lines.join("\n")}`;
    const caption = el("p", "stages-caption", "after the end of your speech, measured by the server");
    details.append(summary, caption, table);
    if (first != null) {
      details.dataset.speed = first < 800 ? "fast" : first < 1500 ? "ok" : "slow";
    }
    entry.agent?.item.classList.remove("streaming", "speaking");
    if (entry.agent && !entry.agent.cut && !tidy(entry.agent.full).trim()) {
      entry.agent.text.replaceChildren(el("em", "nothing", "(no words in the reply)"));
    }
    if (entry.agent) entry.agent.meta.append(details);
    else host.append(details);
  }

  #note(text, kind) {
    const item = el("li", `note note-${kind}`, text);
    this.list.append(item);
    this.#changed();
  }

  #changed() {
    const empty = this.list.children.length === 0;
    this.emptyNote.hidden = !empty;
    this.clearButton.hidden = empty;
  }

  #scroll() {
    // The log is its own scroll box: follow the newest line unless the reader scrolled up.
    const list = this.list;
    const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 120;
    if (nearBottom) list.scrollTop = list.scrollHeight;
  }
}
