"""One conversation's messages, as the language model sees them."""

from __future__ import annotations

from agent.stages.llm import Message


class ChatHistory:
    """One session's conversation: the system prompt, then alternating user and assistant
    messages. An interrupted reply is kept as the text the user actually heard."""

    def __init__(self, system_prompt: str) -> None:
        self.messages: list[Message] = [{"role": "system", "content": system_prompt}]

    def add_user(self, text: str) -> None:
        if self.messages[-1]["role"] == "user":
            # A user turn whose reply never started: merge, keep the roles alternating.
            self.messages[-1]["content"] += " " + text
        else:
            self.messages.append({"role": "user", "content": text})

    def add_assistant(self, text: str) -> None:
        if text:
            self.messages.append({"role": "assistant", "content": text})

    def for_prompt(self) -> list[Message]:
        return [dict(m) for m in self.messages]

    def drop_oldest(self, count: int) -> None:
        """Forget the `count` oldest messages after the system prompt (see ChatModel.fit)."""
        if count > 0:
            del self.messages[1 : 1 + count]
