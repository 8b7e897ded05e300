"""ivr: a DTMF menu. Each node plays a prompt and maps keys to a node or an action.

A menu is a TOML file (`callbot run --plugin ivr:menu=menu.toml`) or a `Menu` in Python
(`bot.use("ivr", menu=Menu(...))`):

    start = "main"
    timeout = 5            # seconds to wait for a key once the prompt has played
    retries = 2            # timeouts or wrong keys in a row before giving up (then: hangup)
    invalid = "sorry.wav"  # played after a wrong key (optional)

    [nodes.main]
    prompt = "menu.wav"
    keys = { "1" = "sales", "2" = "transfer:operator", "3" = "record", "9" = "hangup" }

    [nodes.sales]
    prompt = "sales.wav"
    keys = { "0" = "main", "*" = "repeat" }

A key leads to a node name, or to an action: `repeat`, `hangup`, `transfer:USER`, or
`record[:SECONDS]` (a voicemail-style message saved in the plugin's `dir`). Keys pressed while a
prompt plays cut it short (barge-in) and keys typed ahead are kept in order. Paths in a TOML
menu are relative to the file.

Speech menus (`pip install 'callbot[voice]'`, docs/howto/voice.md): a node's `say` speaks its
prompt (instead of a `prompt` file) and its `words` lead somewhere like keys do; the caller may
say a word or press a key, and either stops the prompt:

    [nodes.main]
    say = "Say sales or support, or press 1 or 2."
    keys = { "1" = "sales", "2" = "support" }
    words = { "sales" = "sales", "support" = "support" }
"""

from __future__ import annotations

import asyncio
import logging
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from callbot import Bot, Call, Incoming
from callbot.media.dtmf import check_digits
from callbot.voice import prepare
from callbot.voice.asr import normalise

from .voicemail import take_message

logger = logging.getLogger(__name__)

ACTIONS = ("repeat", "hangup", "transfer", "record")


@dataclass
class Node:
    """One menu level: its prompt and what each key does."""

    prompt: Path | None = None
    keys: dict[str, str] = field(default_factory=dict)
    say: str | None = None  # text spoken instead of a prompt file
    words: dict[str, str] = field(default_factory=dict)  # spoken options, like keys


@dataclass
class Menu:
    """A whole menu: nodes by name, where to start, and the patience for each caller."""

    nodes: dict[str, Node]
    start: str = "main"
    timeout: float = 5.0
    retries: int = 2
    invalid: Path | None = None

    def __post_init__(self) -> None:
        """Check every reference up front: a broken menu fails at startup, not mid-call."""
        if self.start not in self.nodes:
            raise ValueError(f"ivr: start node {self.start!r} is not among {sorted(self.nodes)}")
        for name, node in self.nodes.items():
            if (node.prompt is None) == (node.say is None):
                raise ValueError(f"ivr: node {name!r} needs a prompt file or a say text")
            for prompt in (node.prompt, self.invalid):
                if prompt is not None and not Path(prompt).is_file():
                    raise ValueError(f"ivr: prompt {prompt} of node {name!r} not found")
            for key in node.keys:
                try:
                    check_digits(key)
                except ValueError as exc:
                    raise ValueError(f"ivr: node {name!r}: {exc}") from None
                if len(key) != 1:
                    raise ValueError(f"ivr: node {name!r}: keys are single digits, not {key!r}")
            node.words = {" ".join(normalise(w)): t for w, t in node.words.items()}
            if "" in node.words:
                raise ValueError(f"ivr: node {name!r}: a word must have letters or digits")
            for key, target in [*node.keys.items(), *node.words.items()]:
                verb = target.split(":", 1)[0]
                if target not in self.nodes and verb not in ACTIONS:
                    nodes, actions = ", ".join(sorted(self.nodes)), ", ".join(ACTIONS)
                    raise ValueError(
                        f"ivr: node {name!r}: {key!r} leads to {target!r}, which is neither "
                        f"a node ({nodes}) nor an action ({actions})"
                    )

    @classmethod
    def load(cls, path: Path) -> Menu:
        """Read a TOML menu; prompt paths are relative to the file."""
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"ivr: cannot read menu {path}: {exc}") from exc
        base = path.parent

        def resolve(value: str) -> Path:
            return (base / value).resolve()

        def node(spec: dict) -> Node:
            prompt = resolve(spec["prompt"]) if "prompt" in spec else None
            keys = {str(k): str(v) for k, v in spec.get("keys", {}).items()}
            words = {str(k): str(v) for k, v in spec.get("words", {}).items()}
            say = str(spec["say"]) if "say" in spec else None
            return Node(prompt=prompt, keys=keys, say=say, words=words)

        nodes = {name: node(spec) for name, spec in data.get("nodes", {}).items()}
        return cls(
            nodes=nodes,
            start=data.get("start", "main"),
            timeout=float(data.get("timeout", 5.0)),
            retries=int(data.get("retries", 2)),
            invalid=resolve(data["invalid"]) if "invalid" in data else None,
        )


class Session:
    """One caller going through the menu; `path` lists the nodes visited, for the record."""

    def __init__(self, call: Call, menu: Menu, recordings: Path, bot: Bot) -> None:
        self.call = call
        self.menu = menu
        self.recordings = recordings
        self.bot = bot
        self.path: list[str] = []

    async def run(self) -> None:
        node, misses = self.menu.start, 0
        while self.call.state in ("connected", "held"):
            self.path.append(node)
            self.call.emit("ivr_node", node)
            here = self.menu.nodes[node]
            key = await self._prompt_and_listen(here)
            target = (here.keys.get(key) or here.words.get(key)) if key is not None else None
            if target is None:
                misses += 1
                if misses > self.menu.retries:
                    await self.call.hangup()
                    return
                if key is not None and self.menu.invalid is not None:
                    await self.call.send_audio_file(self.menu.invalid)
                continue
            misses = 0
            if target in self.menu.nodes:
                node = target
            elif target != "repeat":
                await self._act(target)
                return

    async def _prompt_and_listen(self, node: Node) -> str | None:
        """Play the prompt; return the first key pressed (or word said, in a speech menu)
        during it or `timeout` s after."""
        if node.say is not None or node.words:
            prompt = node.say if node.say is not None else node.prompt
            assert prompt is not None  # checked by Menu
            answer = await self.call.ask(prompt, grammar=list(node.words) or None,
                                         digits=1, timeout=self.menu.timeout)  # fmt: skip
            return answer.digits or answer.choice
        assert node.prompt is not None
        playback = self.call.send_audio_file(node.prompt)
        key_task = asyncio.ensure_future(self.call.read_dtmf())
        try:
            await asyncio.wait([key_task, asyncio.ensure_future(playback)],
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            if key_task.done():
                playback.stop()  # barge-in
                return key_task.result()
            return await asyncio.wait_for(asyncio.shield(key_task), self.menu.timeout)
        except TimeoutError:
            return None
        finally:
            key_task.cancel()

    async def _act(self, action: str) -> None:
        verb, _, argument = action.partition(":")
        if verb == "hangup":
            await self.call.hangup()
        elif verb == "transfer":
            await self.call.transfer(argument)
        elif verb == "record":
            await take_message(self.call, self.recordings, bot=self.bot.user_id,
                               max_seconds=float(argument or 60))  # fmt: skip
            if self.call.state != "ended":
                await self.call.hangup()


def setup(bot: Bot, menu: Menu | Path, dir: Path = Path("recordings"), accept: bool = True) -> None:
    if not isinstance(menu, Menu):
        menu = Menu.load(Path(menu))

    if accept:

        @bot.on_incoming
        async def answer(incoming: Incoming) -> None:
            await incoming.accept()

    spoken = [node.say for node in menu.nodes.values() if node.say is not None]
    if spoken:

        @bot.on("ready")
        async def warm_up() -> None:
            """Speech menus: load the engines and say each prompt once now, not per caller."""
            grammars = [list(n.words) for n in menu.nodes.values() if n.words]
            await prepare(spoken, recognition=bool(grammars), grammars=grammars)

    @bot.on("call")
    def attach(call: Call) -> None:
        @call.on("connected")
        async def start() -> None:
            await Session(call, menu, dir, bot).run()
