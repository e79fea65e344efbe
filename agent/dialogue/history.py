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

    def prompt_with(self, user_text: str) -> list[Message]:
        """The prompt as it will be once `user_text` is added, without adding it: a reply is
        prepared before the turn is sure to be the user's (speculation in a pause)."""
        prompt = self.for_prompt()
        if prompt[-1]["role"] == "user":
            prompt[-1]["content"] += " " + user_text
        else:
            prompt.append({"role": "user", "content": user_text})
        return prompt

    def snapshot(self) -> list[Message]:
        return self.for_prompt()

    def restore(self, snapshot: list[Message]) -> None:
        """Back to a snapshot: a turn the user continued before hearing its reply leaves
        no trace (its words come back, whole, with the rest of the utterance)."""
        self.messages = [dict(m) for m in snapshot]

    def drop_oldest(self, count: int) -> None:
        """Forget the `count` oldest messages after the system prompt (see ChatModel.fit)."""
        if count > 0:
            del self.messages[1 : 1 + count]
