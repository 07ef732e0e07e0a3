"""Drives Mahavishnu's MCP server with the official Python MCP client (`mcp` from PyPI).

Usage: scenario.py stdio BINARY WORKDIR   (the server is started as `BINARY mcp` in WORKDIR)
       scenario.py http URL WORKDIR [TOKEN]

The environment of this process (state directory, tmux socket, HOME) is the server's. Every check
raises on failure; on success the script prints one JSON object of what it saw, for the Rust test to
compare with the CLI.
"""

import json
import os
import shutil
import sys
import time

import anyio
import httpx2
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

EXPECTED_TOOLS = {
    "terminal_launch", "terminal_send", "terminal_keys", "terminal_capture", "terminal_wait",
    "terminal_list", "terminal_exec", "terminal_close", "targets_list", "target_show",
    "session_start", "session_end", "session_status", "session_list", "hooks_list", "hooks_runs",
    "checkpoint_create", "checkpoint_list", "checkpoint_diff", "checkpoint_restore",
    "agents_list", "agent_get", "agent_create", "agents_validate", "agent_run",
    "instances_launch", "instance_exec", "instance_status", "instances_list", "instance_stop",
    "terminal_broadcast", "terminal_diff", "terminal_pause", "terminal_resume", "terminal_repair",
    "terminal_merge", "terminal_resize", "repos_list", "sweep_run", "sweep_status", "check_run",
    "workflow_run", "workflow_list",
}


def check(condition, message):
    if not condition:
        raise AssertionError(message)


async def call(session, name, arguments, **options):
    result = await session.call_tool(name, arguments, **options)
    check(not result.is_error, f"{name} {arguments} failed: {result.content}")
    check(isinstance(result.structured_content, dict), f"{name}: structuredContent is an object")
    check(result.content and result.content[0].type == "text", f"{name}: a text summary comes first")
    return result.structured_content


async def fails(session, name, arguments, needle):
    result = await session.call_tool(name, arguments)
    check(result.is_error, f"{name} {arguments} should fail: {result}")
    text = result.content[0].text
    check(text.startswith("error: "), f"{name}: the message starts like the CLI's: {text}")
    check(needle in text, f"{name}: {needle!r} not in {text!r}")
    return text


async def scenario(session, workdir, transport):
    report = {}
    await session.initialize()

    tools = (await session.list_tools()).tools
    names = {tool.name for tool in tools}
    check(EXPECTED_TOOLS <= names, f"missing tools: {EXPECTED_TOOLS - names}")
    for tool in tools:
        check(tool.description, f"{tool.name} has a description")
        for field, spec in tool.input_schema.get("properties", {}).items():
            check(spec.get("description"), f"{tool.name}.{field} is described")
    report["tools"] = sorted(names)

    # Terminals: launch, send, wait (with progress), capture, exec, list, resources.
    launched = await call(session, "terminal_launch", {"profile": "shell", "count": 2, "target": transport["target"]})
    ids = [instance["id"] for instance in launched["instances"]]
    check(len(ids) == 2, f"two sessions: {launched}")
    first = ids[0]
    await call(session, "terminal_wait", {"id": first, "idle_ms": 300, "timeout": 20})
    sent = await call(session, "terminal_send", {"id": first, "text": "sleep 1.5; echo mcp-$((6*7))"})
    check(sent == {"id": first, "characters": 28, "enter": True}, f"what send typed: {sent}")
    progress = []

    async def on_progress(done, total, message):
        progress.append((done, total, message))

    waited = await call(
        session, "terminal_wait", {"id": first, "pattern": "^mcp-42$", "timeout": 20},
        progress_callback=on_progress,
    )
    check(waited["matched"] == "mcp-42", f"the wait matched: {waited}")
    check(progress, "terminal_wait reported progress while it waited")
    report["progress"] = len(progress)
    captured = await call(session, "terminal_capture", {"id": first})
    check("mcp-42" in captured["text"], f"the screen shows the output: {captured}")
    report["capture"] = captured
    executed = await call(session, "terminal_exec", {"id": first, "command": ["pwd"]})
    check(executed["exit_code"] == 0, f"exec ran: {executed}")
    check(os.path.realpath(executed["stdout"].strip()) == os.path.realpath(workdir), f"exec ran in the cwd: {executed}")
    sent_all = await call(session, "terminal_broadcast", {"text": "echo everyone-$((3*3))", "profile": "shell"})
    check({s["id"] for s in sent_all["sent"]} >= set(ids) and all(s["ok"] for s in sent_all["sent"]), f"{sent_all}")
    await call(session, "terminal_wait", {"id": ids[1], "pattern": "^everyone-9$", "timeout": 20})
    keys = await call(session, "terminal_keys", {"id": ids[1], "keys": ["C-c"]})
    check(keys["keys"] == ["C-c"], f"the key pressed: {keys}")
    listed = await call(session, "terminal_list", {})
    check({i["id"] for i in listed["instances"]} >= set(ids), f"list has both: {listed}")
    status = await call(session, "instance_status", {"id": first})
    check(status["id"] == first and status["state"] in ("running", "waiting"), f"status: {status}")
    report["instance_keys"] = sorted(status.keys())

    resources = (await session.list_resources()).resources
    uris = {str(resource.uri) for resource in resources}
    screen_uri = f"mahavishnu://instances/{first}/screen"
    check(screen_uri in uris, f"{screen_uri} is listed in {uris}")
    read = await session.read_resource(screen_uri)
    check("mcp-42" in read.contents[0].text, f"the screen resource reads: {read}")

    # Bad input: each gets a protocol-correct answer, and the server keeps serving.
    try:
        await session.call_tool("no_such_tool", {})
        raise AssertionError("an unknown tool is a protocol error")
    except MCPError as error:
        check("no_such_tool" in str(error), f"the error names the tool: {error}")
    await fails(session, "terminal_send", {"id": 7, "text": "x"}, "invalid type")
    await fails(session, "terminal_send", {"text": "x"}, "missing field `id`")
    await fails(session, "terminal_capture", {"id": "k8s:dev/mv-x"}, "no instance `k8s:dev/mv-x`")
    await fails(session, "terminal_capture", {"id": "cloudrun:svc"}, "no target `cloudrun`")
    await fails(session, "terminal_capture", {"id": "tmux:mv-none"}, "no instance `tmux:mv-none`")
    await fails(session, "terminal_send", {"id": first, "text": "y" * (2 * 1024 * 1024)}, "the limit is")
    await fails(session, "terminal_launch", {"profile": "nope"}, "unknown profile `nope`")
    try:
        await session.get_prompt("no-such-agent", {"task": "x"})
        raise AssertionError("an unknown prompt is a protocol error")
    except MCPError as error:
        check("no agent `no-such-agent`" in str(error), f"{error}")

    # Cancellation: a wait that would last a minute ends when the client gives up on it.
    started = time.monotonic()
    with anyio.move_on_after(1.0):
        await session.call_tool("terminal_wait", {"id": first, "pattern": "never-appears", "timeout": 60})
    check(time.monotonic() - started < 5, "the cancelled call returned")
    again = await call(session, "terminal_capture", {"id": first})
    check("mcp-42" in again["text"], "the server serves on after a cancellation")
    # A cancelled side command is killed: its last step never runs.
    marker = os.path.join(workdir, f"cancelled-{transport['name']}")
    with anyio.move_on_after(0.5):
        await session.call_tool("terminal_exec", {"id": first, "command": ["sh", "-c", f"sleep 2; touch {marker}"]})
    await anyio.sleep(3)
    check(not os.path.exists(marker), "the server stopped the cancelled call")

    # Many calls at once.
    answers = []

    async def capture_once():
        result = await session.call_tool("terminal_capture", {"id": ids[1]})
        answers.append(not result.is_error)

    async with anyio.create_task_group() as group:
        for _ in range(transport["concurrent"]):
            group.start_soon(capture_once)
    check(all(answers) and len(answers) == transport["concurrent"], f"concurrent calls: {answers.count(False)} failed")

    # Lifecycle: a session starts and ends; checkpoints.
    started_session = await call(session, "session_start", {"project": workdir, "id": f"mcp-{transport['name']}"})
    check(started_session["applied"] and started_session["session"]["state"] == "active", f"{started_session}")
    again = await call(session, "session_start", {"project": workdir, "id": f"mcp-{transport['name']}"})
    check(not again["applied"], "starting a started session is a no-op")
    ended = await call(session, "session_end", {"project": workdir, "id": f"mcp-{transport['name']}"})
    check(ended["session"]["state"] == "ended", f"{ended}")
    report["session_status"] = await call(session, "session_status", {"id": f"mcp-{transport['name']}"})
    await call(session, "session_list", {})
    await call(session, "hooks_list", {"project": workdir})
    await call(session, "hooks_runs", {"limit": 5})
    made = await call(session, "checkpoint_create", {"project": workdir, "message": "from mcp"})
    report["checkpoints"] = await call(session, "checkpoint_list", {"project": workdir})
    check(made["id"] in [c["id"] for c in report["checkpoints"]["checkpoints"]], "the checkpoint is listed")
    diff = await call(session, "checkpoint_diff", {"project": workdir, "id": made["id"], "stat": True})
    check(diff["id"] == made["id"], f"{diff}")

    # A session in its own worktree: change, diff, pause, resume, merge, prune.
    name = f"wt-{transport['name']}"
    in_tree = (await call(session, "terminal_launch", {"profile": "shell", "target": transport["target"], "worktree": True, "name": name}))["instances"][0]
    check(in_tree["worktree"]["branch"] == f"mahavishnu/{name}", f"{in_tree}")
    await call(session, "terminal_exec", {"id": in_tree["id"], "command": ["sh", "-c", "echo from-the-agent > agent.txt"]})
    diff = await call(session, "terminal_diff", {"id": in_tree["id"], "stat": True})
    check("agent.txt" in diff["diff"], f"{diff}")
    paused = await call(session, "terminal_pause", {"id": in_tree["id"]})
    check(paused["committed_work_in_progress"], f"{paused}")
    check(not os.path.exists(in_tree["worktree"]["path"]), "the paused worktree is removed")
    await call(session, "terminal_resume", {"id": in_tree["id"]})
    kept = await call(session, "terminal_exec", {"id": in_tree["id"], "command": ["cat", "agent.txt"]})
    check(kept["stdout"] == "from-the-agent\n", f"resume keeps the work: {kept}")
    merged = await call(session, "terminal_merge", {"id": in_tree["id"]})
    check(open(os.path.join(workdir, "agent.txt")).read() == "from-the-agent\n", f"merged into the work tree: {merged}")
    shutil.rmtree(in_tree["worktree"]["path"])
    repaired = await call(session, "terminal_repair", {"id": in_tree["id"]})
    check(repaired["instances"][0]["id"] == in_tree["id"], f"{repaired}")
    kept = await call(session, "terminal_exec", {"id": in_tree["id"], "command": ["cat", "agent.txt"]})
    check(kept["stdout"] == "from-the-agent\n", f"repair brings back what the branch holds: {kept}")
    await call(session, "terminal_close", {"ids": [in_tree["id"]], "grace": 0.2})

    # Agents: tools and prompts.
    agents = await call(session, "agents_list", {})
    check("reviewer" in [a["name"] for a in agents["agents"]], f"{agents}")
    report["agent"] = await call(session, "agent_get", {"name": "reviewer"})
    validated = await call(session, "agents_validate", {})
    check(validated["diagnostics"] == [], f"{validated}")
    prompts = (await session.list_prompts()).prompts
    reviewer = next(p for p in prompts if p.name == "reviewer")
    check(reviewer.description == report["agent"]["description"], "the prompt carries the description")
    check(reviewer.arguments[0].name == "task" and reviewer.arguments[0].required, "task is its argument")
    prompt = await session.get_prompt("reviewer", {"task": "Review the parser"})
    text = prompt.messages[0].content.text
    check("Review code for bugs" in text and "Review the parser" in text, f"the prompt: {text}")

    # Workflows: the work directory in the catalog, and a sweep over it that reports its progress.
    added = await call(session, "repos_add", {"paths": [workdir], "tags": ["scenario"]})
    check(len(added["added"] + added["already"]) == 1, f"{added}")
    swept_progress = []

    async def on_sweep_progress(done, total, message):
        swept_progress.append((done, total, message))

    swept = await call(
        session, "sweep_run", {"tag": "scenario", "command": ["git", "rev-parse", "--is-inside-work-tree"]},
        progress_callback=on_sweep_progress,
    )
    check(swept["summary"]["ok"] == 1 and swept["results"][0]["last_line"] == "true", f"{swept}")
    check(swept_progress and swept_progress[-1][0] == swept_progress[-1][1] == 1, f"{swept_progress}")
    report["sweep"] = swept["id"]

    # Closing: every launched session goes.
    closed = await call(session, "terminal_close", {"ids": ids, "grace": 0.2})
    check(all(outcome["closed"] for outcome in closed["closed"]), f"{closed}")
    # The target-neutral tools: launch, run, stop one instance.
    other = (await call(session, "instances_launch", {"profile": "shell", "target": transport["target"]}))["instances"][0]["id"]
    ran = await call(session, "instance_exec", {"id": other, "command": ["sh", "-c", "echo $MAHAVISHNU_INSTANCE_ID"]})
    check(ran["id"] == other, f"{ran}")
    by_target = await call(session, "instances_list", {"target": transport["target"]})
    check(other in [i["id"] for i in by_target["instances"]], f"{by_target}")
    stopped = await call(session, "instance_stop", {"id": other, "grace": 0.2})
    check(stopped == {"id": other, "closed": True}, f"{stopped}")
    status = await call(session, "instance_status", {"id": other})
    check(status["state"] == "closed", f"{status}")
    report["ids"] = ids
    return report


async def main():
    mode, where, workdir = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "stdio":
        transport = {"name": "stdio", "target": "pty", "concurrent": 20}
        server = StdioServerParameters(command=where, args=["mcp"], env=dict(os.environ), cwd=workdir)
        async with stdio_client(server) as (read, write):
            async with ClientSession(read, write) as session:
                report = await scenario(session, workdir, transport)
    else:
        transport = {"name": "http", "target": "tmux", "concurrent": 100}
        headers = {"Authorization": f"Bearer {sys.argv[4]}"} if len(sys.argv) > 4 else {}
        async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60.0)) as client:
            async with streamable_http_client(where, http_client=client) as (read, write):
                async with ClientSession(read, write) as session:
                    report = await scenario(session, workdir, transport)
    print(json.dumps(report))


if __name__ == "__main__":
    anyio.run(main)
