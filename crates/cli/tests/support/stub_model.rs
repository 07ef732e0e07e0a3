//! A FAKE model server, for tests only: a loopback endpoint that speaks OpenAI's chat completions and
//! Responses API and Anthropic's Messages API, answers every request with one canned reply (streamed or not), or a
//! prompt with one canned tool call for OpenAI's chat completions, and records
//! the requests it got. The real Qwen Code and Claude Code CLIs talk to it over real HTTP; no real
//! model can run on the test machines.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// A running stub model.
pub struct StubModel {
    pub port: u16,
    pub reply: String,
    requests: Arc<Mutex<Vec<serde_json::Value>>>,
    /// How long it thinks before it answers a model request, in milliseconds.
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl StubModel {
    /// Starts the stub on a free loopback port; it answers until the test process ends.
    pub fn start(reply: &str) -> Self {
        Self::start_with_tool(reply, None)
    }

    /// Starts the stub; to a prompt (a chat completion whose last message is the user's) it answers
    /// by calling `tool` (`{"name": ..., "arguments": {...}}`) when one is given, and to the tool's
    /// result with `reply`.
    pub fn start_with_tool(reply: &str, tool: Option<serde_json::Value>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the stub model");
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&requests);
        let canned = reply.to_string();
        let tool = Arc::new(tool);
        let delay_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let delay = Arc::clone(&delay_ms);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let recorded = Arc::clone(&recorded);
                let canned = canned.clone();
                let tool = Arc::clone(&tool);
                let delay = Arc::clone(&delay);
                std::thread::spawn(move || {
                    let delay = std::time::Duration::from_millis(
                        delay.load(std::sync::atomic::Ordering::Relaxed),
                    );
                    let _ = answer(stream, &canned, &recorded, tool.as_ref().as_ref(), delay);
                });
            }
        });
        StubModel {
            port,
            reply: reply.to_string(),
            requests,
            delay_ms,
        }
    }

    /// From now on, it takes `delay` to answer each model request (a CLI shows that it works).
    pub fn think_for(&self, delay: std::time::Duration) {
        self.delay_ms.store(
            delay.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// The base URL to give Claude Code (`ANTHROPIC_BASE_URL`).
    pub fn anthropic_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The base URL to give the CLI (`--openai-base-url`).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// The JSON bodies of the chat requests received so far.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        self.requests.lock().unwrap().clone()
    }
}

fn answer(
    stream: TcpStream,
    reply: &str,
    recorded: &Mutex<Vec<serde_json::Value>>,
    tool: Option<&serde_json::Value>,
    delay: std::time::Duration,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        if header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let mut stream = stream;
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    if request_line.starts_with("GET") && path.ends_with("/models") {
        let models = serde_json::json!({ "object": "list", "data": [{ "id": "stub-model", "object": "model" }] });
        return respond(&mut stream, "application/json", &models.to_string());
    }
    let path = path.split('?').next().unwrap_or("").to_string();
    if path.ends_with("/messages/count_tokens") {
        return respond(&mut stream, "application/json", r#"{"input_tokens":5}"#);
    }
    std::thread::sleep(delay);
    if path.ends_with("/v1/messages") {
        let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let streamed = request["stream"].as_bool().unwrap_or(false);
        recorded.lock().unwrap().push(request);
        return answer_message(&mut stream, reply, streamed);
    }
    if path.ends_with("/responses") {
        let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        recorded.lock().unwrap().push(request);
        return answer_response(&mut stream, reply);
    }
    if !path.ends_with("/chat/completions") {
        return respond_status(
            &mut stream,
            "404 Not Found",
            r#"{"error":{"message":"not found"}}"#,
        );
    }
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let streamed = request["stream"].as_bool().unwrap_or(false);
    // A prompt (the user spoke last) is answered with the tool call, when there is one to make.
    let prompted = request["messages"]
        .as_array()
        .and_then(|messages| messages.last())
        .is_some_and(|last| last["role"] == "user");
    let call = tool.filter(|_| prompted).map(|tool| {
        serde_json::json!([{
            "index": 0, "id": "call_stub", "type": "function",
            "function": { "name": tool["name"], "arguments": tool["arguments"].to_string() },
        }])
    });
    recorded.lock().unwrap().push(request);
    let usage =
        serde_json::json!({ "prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8 });
    if let Some(call) = call {
        if streamed {
            let first = serde_json::json!({
                "id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": 0, "model": "stub-model",
                "choices": [{ "index": 0, "delta": { "role": "assistant", "content": null, "tool_calls": call }, "finish_reason": null }],
            });
            let last = serde_json::json!({
                "id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": 0, "model": "stub-model",
                "choices": [{ "index": 0, "delta": {}, "finish_reason": "tool_calls" }], "usage": usage,
            });
            let events = format!("data: {first}\n\ndata: {last}\n\ndata: [DONE]\n\n");
            return respond(&mut stream, "text/event-stream", &events);
        }
        let completion = serde_json::json!({
            "id": "chatcmpl-stub", "object": "chat.completion", "created": 0, "model": "stub-model",
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": null, "tool_calls": call }, "finish_reason": "tool_calls" }],
            "usage": usage,
        });
        return respond(&mut stream, "application/json", &completion.to_string());
    }
    if streamed {
        let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
            let mut chunk = serde_json::json!({
                "id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": 0, "model": "stub-model",
                "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
            });
            if !finish.is_null() {
                chunk["usage"] = usage.clone();
            }
            format!("data: {chunk}\n\n")
        };
        let mut events = chunk(
            serde_json::json!({ "role": "assistant", "content": reply }),
            serde_json::Value::Null,
        );
        events.push_str(&chunk(serde_json::json!({}), "stop".into()));
        events.push_str("data: [DONE]\n\n");
        return respond(&mut stream, "text/event-stream", &events);
    }
    let completion = serde_json::json!({
        "id": "chatcmpl-stub", "object": "chat.completion", "created": 0, "model": "stub-model",
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": reply }, "finish_reason": "stop" }],
        "usage": usage,
    });
    respond(&mut stream, "application/json", &completion.to_string())
}

/// A Responses API answer (what Codex speaks): one assistant message, streamed as `response.*`
/// server-sent events in chunked encoding.
fn answer_response(stream: &mut TcpStream, reply: &str) -> std::io::Result<()> {
    let item = serde_json::json!({
        "type": "message", "role": "assistant", "id": "msg_stub",
        "content": [{ "type": "output_text", "text": reply, "annotations": [] }],
    });
    let mut added = item.clone();
    added["content"] = serde_json::json!([]);
    let usage = serde_json::json!({
        "input_tokens": 5, "input_tokens_details": { "cached_tokens": 0 },
        "output_tokens": 3, "output_tokens_details": { "reasoning_tokens": 0 }, "total_tokens": 8,
    });
    let events = [
        serde_json::json!({ "type": "response.created", "response": { "id": "resp_stub" } }),
        serde_json::json!({ "type": "response.output_item.added", "output_index": 0, "item": added }),
        serde_json::json!({
            "type": "response.output_text.delta", "item_id": "msg_stub", "output_index": 0,
            "content_index": 0, "delta": reply,
        }),
        serde_json::json!({ "type": "response.output_item.done", "output_index": 0, "item": item }),
        serde_json::json!({ "type": "response.completed", "response": { "id": "resp_stub", "usage": usage } }),
    ];
    stream.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )?;
    for data in events {
        let event = format!(
            "event: {}\ndata: {data}\n\n",
            data["type"].as_str().unwrap_or("")
        );
        stream.write_all(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes())?;
        stream.flush()?;
    }
    stream.write_all(b"0\r\n\r\n")
}

/// A Messages API answer: one message of text; streamed as server-sent events in chunked encoding, the
/// way the real API sends them.
fn answer_message(stream: &mut TcpStream, reply: &str, streamed: bool) -> std::io::Result<()> {
    let message = serde_json::json!({
        "id": "msg_stub", "type": "message", "role": "assistant", "model": "stub-model",
        "content": [{ "type": "text", "text": reply }],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": { "input_tokens": 5, "output_tokens": 3 },
    });
    if !streamed {
        return respond(stream, "application/json", &message.to_string());
    }
    let mut start = message.clone();
    start["content"] = serde_json::json!([]);
    start["stop_reason"] = serde_json::Value::Null;
    let events = [
        (
            "message_start",
            serde_json::json!({ "type": "message_start", "message": start }),
        ),
        (
            "content_block_start",
            serde_json::json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "text", "text": "" } }),
        ),
        (
            "content_block_delta",
            serde_json::json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": reply } }),
        ),
        (
            "content_block_stop",
            serde_json::json!({ "type": "content_block_stop", "index": 0 }),
        ),
        (
            "message_delta",
            serde_json::json!({ "type": "message_delta", "delta": { "stop_reason": "end_turn", "stop_sequence": null }, "usage": { "output_tokens": 3 } }),
        ),
        (
            "message_stop",
            serde_json::json!({ "type": "message_stop" }),
        ),
    ];
    stream.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )?;
    for (name, data) in events {
        let event = format!("event: {name}\ndata: {data}\n\n");
        stream.write_all(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes())?;
        stream.flush()?;
    }
    stream.write_all(b"0\r\n\r\n")
}

fn respond(stream: &mut TcpStream, content_type: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())
}

fn respond_status(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())
}
