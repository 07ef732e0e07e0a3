//! The MCP server: every operation as a tool, every agent as a prompt, every live instance's screen as a
//! resource.

use mahavishnu_api::{
    Api, CaptureParams, Progress, Reply, agent_prompt, capture_screen, operations,
};
use mahavishnu_core::{Error, InstanceId};
use mahavishnu_orchestrator::ListFilter;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CompleteRequestParams, CompleteResult,
    CompletionInfo, ContentBlock, GetPromptRequestParams, GetPromptResponse, GetPromptResult,
    Implementation, ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult,
    ListToolsResult, PaginatedRequestParams, ProgressNotificationParam, Prompt, PromptArgument,
    PromptMessage, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Reference,
    Resource, ResourceContents, ResourceTemplate, Role, ServerCapabilities, ServerConfig,
    SubscribeRequestParams, Tool, ToolAnnotations, UnsubscribeRequestParams,
};
// MCP logging is deprecated in rmcp (SEP-2577), yet clients still set levels and read messages.
#[allow(deprecated)]
use rmcp::model::SetLevelRequestParams;
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};

use crate::catalog;
use crate::live::Live;

const INSTRUCTIONS: &str = "Mahavishnu runs terminal sessions of AI coding CLIs (Qwen Code, Claude Code, \
Gemini CLI, Codex) and shells on tmux, pty and other targets. Launch sessions with terminal_launch, type \
with terminal_send, read the screen with terminal_capture, wait with terminal_wait. Ids look like \
tmux:mv-7f3a; their prefix names the target. Coding sessions (session_*), their hooks and git \
checkpoints, and agent definitions (agents_*) are here too. Each agent is also a prompt.";

/// The scheme and path of screen resources: `mahavishnu://instances/{id}/screen`.
const SCREEN_PREFIX: &str = "mahavishnu://instances/";
const SCREEN_SUFFIX: &str = "/screen";

/// The server over one set of services, for one client session.
#[derive(Clone)]
pub struct McpServer {
    api: Api,
    live: Live,
}

impl McpServer {
    /// Serves `api`.
    pub fn new(api: Api) -> Self {
        McpServer {
            api,
            live: Live::default(),
        }
    }

    /// The live instance ids that start with `prefix`, sorted.
    async fn instance_ids(&self, prefix: &str) -> Result<Vec<String>, ErrorData> {
        let instances = live_instances(&self.api)
            .await
            .map_err(|error| ErrorData::internal_error(error.to_string(), None))?;
        let mut ids: Vec<String> = instances
            .iter()
            .map(|instance| instance.id.to_string())
            .filter(|id| id.starts_with(prefix))
            .collect();
        ids.sort();
        Ok(ids)
    }
}

/// The live instances (those that have a screen to read), as the store and their targets say now.
pub(crate) async fn live_instances(
    api: &Api,
) -> mahavishnu_core::Result<Vec<mahavishnu_core::Instance>> {
    let mut instances = api
        .orchestrator()
        .list_instances(&ListFilter::default())
        .await?;
    instances.retain(|instance| instance.state.is_live());
    Ok(instances)
}

/// At most [`CompletionInfo::MAX_VALUES`] of `values`, saying whether there were more.
fn completion_of(values: Vec<String>) -> CompleteResult {
    let total = values.len();
    let mut values = values;
    values.truncate(CompletionInfo::MAX_VALUES);
    let has_more = total > values.len();
    let info = CompletionInfo::with_pagination(values, u32::try_from(total).ok(), has_more)
        .unwrap_or_default();
    CompleteResult::new(info)
}

/// The MCP tool list, built once from the operations.
fn tools() -> &'static [Tool] {
    static TOOLS: std::sync::OnceLock<Vec<Tool>> = std::sync::OnceLock::new();
    TOOLS.get_or_init(|| {
        operations()
            .iter()
            .map(|operation| {
                Tool::new(
                    operation.name,
                    operation.description,
                    operation.input_schema(),
                )
                .with_raw_output_schema(operation.output_schema())
                .annotate(
                    ToolAnnotations::new()
                        .read_only(operation.read_only)
                        .destructive(operation.destructive)
                        .idempotent(operation.idempotent)
                        .open_world(false),
                )
            })
            .collect()
    })
}

/// An operation's reply as a tool result: the object as `structuredContent`, the summary and the
/// object as text for clients that read only text.
pub fn tool_result(reply: Reply) -> CallToolResult {
    let failed = reply.failed;
    let mut result = CallToolResult::structured(reply.value);
    result.content.insert(0, ContentBlock::text(reply.summary));
    if failed {
        result.is_error = Some(true);
    }
    result
}

/// A failed operation as a tool result: `isError`, with the message the CLI prints.
pub fn tool_error(error: &Error) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(format!("error: {error}"))])
}

/// Turns `notifications/progress` on for a request whose client sent a progress token. The
/// notifications go out in order, from one task that ends once the call has dropped its `Progress`:
/// awaiting it before the result is sent means no notification comes after the result.
fn progress_of(
    context: &RequestContext<RoleServer>,
) -> (Progress, Option<tokio::task::JoinHandle<()>>) {
    let Some(token) = context.meta.get_progress_token() else {
        return (Progress::default(), None);
    };
    let (sender, mut receiver) =
        tokio::sync::mpsc::unbounded_channel::<ProgressNotificationParam>();
    let peer = context.peer.clone();
    let sending = tokio::spawn(async move {
        while let Some(param) = receiver.recv().await {
            let _ = peer.notify_progress(param).await;
        }
    });
    let progress = Progress::new(move |done, total, message| {
        let mut param = ProgressNotificationParam::new(token.clone(), done).with_message(message);
        if let Some(total) = total {
            param = param.with_total(total);
        }
        let _ = sender.send(param);
    });
    (progress, Some(sending))
}

/// The resource URI of an instance's screen; `/` and `%` in the id are percent-encoded.
pub fn screen_uri(id: &InstanceId) -> String {
    let encoded = id.to_string().replace('%', "%25").replace('/', "%2F");
    format!("{SCREEN_PREFIX}{encoded}{SCREEN_SUFFIX}")
}

/// The instance id in a screen resource URI.
pub(crate) fn id_of_screen_uri(uri: &str) -> Option<String> {
    let encoded = uri
        .strip_prefix(SCREEN_PREFIX)?
        .strip_suffix(SCREEN_SUFFIX)?;
    Some(
        encoded
            .replace("%2F", "/")
            .replace("%2f", "/")
            .replace("%25", "%"),
    )
}

/// The `start-session` prompt with its arguments.
fn start_session(
    arguments: Option<&serde_json::Map<String, Value>>,
) -> Result<GetPromptResult, ErrorData> {
    let text = |name: &str| match arguments.and_then(|a| a.get(name)) {
        Some(Value::String(value)) if !value.trim().is_empty() => Ok(Some(value.clone())),
        Some(Value::String(_)) | None => Ok(None),
        Some(other) => Err(ErrorData::invalid_params(
            format!("the argument `{name}` must be a string, not {other}"),
            None,
        )),
    };
    let needed = |name: &str, what: &str| {
        text(name)?.ok_or_else(|| {
            ErrorData::invalid_params(
                format!(
                    "the prompt `{}` needs its argument `{name}`: {what}",
                    catalog::START_SESSION
                ),
                None,
            )
        })
    };
    let profile = needed("profile", "the profile to start, e.g. qwen")?;
    let task = needed("task", "what the session should do")?;
    let target = text("target")?;
    let message = catalog::start_session_message(&profile, &task, target.as_deref());
    Ok(
        GetPromptResult::new(vec![PromptMessage::new_text(Role::User, message)])
            .with_description(format!("A {profile} session and its task")),
    )
}

impl ServerHandler for McpServer {
    #[allow(deprecated)]
    fn get_info(&self) -> ServerConfig {
        let mut info = ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_prompts()
                .enable_resources()
                .enable_resources_subscribe()
                .enable_resources_list_changed()
                .enable_completions()
                .enable_logging()
                .build(),
        );
        info.server_info = Implementation::new("mahavishnu", env!("CARGO_PKG_VERSION"));
        info.instructions = Some(INSTRUCTIONS.into());
        info
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools().to_vec()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools().iter().find(|tool| tool.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if mahavishnu_api::operation(&request.name).is_none() {
            return Err(ErrorData::invalid_params(
                format!(
                    "no tool `{}`; tools/list names the tools this server has",
                    request.name
                ),
                None,
            ));
        }
        let arguments = request.arguments.map_or(Value::Null, Value::Object);
        self.live
            .debug(json!({ "tool": request.name, "event": "called" }));
        let (progress, sending) = progress_of(&context);
        let call = self.api.call(&request.name, arguments, progress);
        let result = tokio::select! {
            result = call => result,
            () = context.ct.cancelled() => Err(Error::Failed(format!("`{}` was cancelled", request.name))),
        };
        // Every progress notification before the result (a task the call left behind may still
        // hold its `Progress`: it gets a moment, not forever).
        if let Some(sending) = sending {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), sending).await;
        }
        Ok(match result {
            Ok(reply) => {
                if reply.failed {
                    self.live
                        .error(json!({ "tool": request.name, "error": reply.summary }));
                }
                tool_result(reply)
            }
            Err(error) => {
                self.live
                    .error(json!({ "tool": request.name, "error": error.to_string() }));
                tool_error(&error)
            }
        }
        .into())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let registry = mahavishnu_agents::Registry::load(self.api.cwd(), self.api.home());
        let agents = registry
            .agents
            .iter()
            // The built-in prompt keeps its name.
            .filter(|agent| agent.name != catalog::START_SESSION)
            .map(|agent| {
                Prompt::new(
                    agent.name.clone(),
                    Some(agent.description.clone()),
                    Some(vec![
                        PromptArgument::new("task")
                            .with_description("What the agent should do")
                            .with_required(true),
                    ]),
                )
            });
        let prompts = std::iter::once(catalog::start_session_prompt())
            .chain(agents)
            .collect();
        Ok(ListPromptsResult::with_all_items(prompts))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        if request.name == catalog::START_SESSION {
            return start_session(request.arguments.as_ref()).map(Into::into);
        }
        let registry = mahavishnu_agents::Registry::load(self.api.cwd(), self.api.home());
        let agent = registry
            .get(&request.name)
            .map_err(|error| ErrorData::invalid_params(error.to_string(), None))?;
        let task = match request.arguments.as_ref().and_then(|a| a.get("task")) {
            Some(Value::String(task)) if !task.trim().is_empty() => task.clone(),
            Some(Value::String(_)) | None => {
                return Err(ErrorData::invalid_params(
                    format!(
                        "the prompt `{}` needs its argument `task`: what the agent should do",
                        agent.name
                    ),
                    None,
                ));
            }
            Some(other) => {
                return Err(ErrorData::invalid_params(
                    format!("the argument `task` must be a string, not {other}"),
                    None,
                ));
            }
        };
        let message = PromptMessage::new_text(Role::User, agent_prompt(agent, &task));
        Ok(GetPromptResult::new(vec![message])
            .with_description(agent.description.clone())
            .into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let instances = live_instances(&self.api)
            .await
            .map_err(|error| ErrorData::internal_error(error.to_string(), None))?;
        let resources = instances
            .iter()
            .map(|instance| {
                Resource::new(screen_uri(&instance.id), format!("{} screen", instance.id))
                    .with_description(format!(
                        "The screen of {} ({}, {})",
                        instance.id, instance.profile, instance.state
                    ))
                    .with_mime_type("text/plain")
            })
            .collect();
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        let screen = ResourceTemplate::new(
            format!("{SCREEN_PREFIX}{{id}}{SCREEN_SUFFIX}"),
            "instance screen",
        )
        .with_description("The screen of an instance, as a person would see it")
        .with_mime_type("text/plain");
        let templates = std::iter::once(screen)
            .chain(catalog::templates())
            .collect();
        Ok(ListResourceTemplatesResult::with_all_items(templates))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        if let Some(read) = catalog::read(&self.api, &request.uri).await {
            let (text, mime) = read.map_err(|message| {
                ErrorData::resource_not_found(format!("{}: {message}", request.uri), None)
            })?;
            let contents = ResourceContents::text(text, request.uri).with_mime_type(mime);
            return Ok(ReadResourceResult::new(vec![contents]).into());
        }
        let Some(id) = id_of_screen_uri(&request.uri) else {
            return Err(ErrorData::resource_not_found(
                format!(
                    "no resource `{}`; there are screens ({SCREEN_PREFIX}{{id}}{SCREEN_SUFFIX}), \
                     agents (mahavishnu://agents/{{name}}), targets (mahavishnu://targets/{{name}}) \
                     and profiles (mahavishnu://profiles/{{name}})",
                    request.uri
                ),
                None,
            ));
        };
        let params = CaptureParams::screen(id);
        let captured = capture_screen(&self.api, params).await.map_err(|error| {
            ErrorData::resource_not_found(format!("{}: {error}", request.uri), None)
        })?;
        Ok(
            ReadResourceResult::new(vec![ResourceContents::text(captured.text, request.uri)])
                .into(),
        )
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        // Any URI may be subscribed to; only screens ever change.
        self.live.subscribe(&self.api, context.peer, request.uri);
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.live.unsubscribe(&request.uri);
        Ok(())
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        let typed = request.argument.value.as_str();
        let values = match &request.r#ref {
            Reference::Resource(template)
                if template.uri == format!("{SCREEN_PREFIX}{{id}}{SCREEN_SUFFIX}")
                    && request.argument.name == "id" =>
            {
                self.instance_ids(typed).await?
            }
            Reference::Resource(template) => match catalog::Kind::of_template(&template.uri) {
                Some(kind) if request.argument.name == "name" => {
                    catalog::names(&self.api, kind, typed)
                }
                _ => Vec::new(),
            },
            // The agent prompts take one free-text argument, `task`.
            Reference::Prompt(prompt) => {
                match catalog::prompt_argument_kind(&prompt.name, &request.argument.name) {
                    Some(kind) => catalog::names(&self.api, kind, typed),
                    None => Vec::new(),
                }
            }
            // A kind of reference this version does not know.
            _ => Vec::new(),
        };
        Ok(completion_of(values))
    }

    #[allow(deprecated)]
    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.live.set_level(context.peer, request.level);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_stop_at_100_and_say_there_are_more() {
        let few = completion_of(vec!["pty:a".into(), "pty:b".into()]);
        assert_eq!(few.completion.values, ["pty:a", "pty:b"]);
        assert_eq!(few.completion.has_more, Some(false));
        let many = completion_of((0..150).map(|n| format!("pty:mv-{n:03}")).collect());
        assert_eq!(many.completion.values.len(), 100);
        assert_eq!(many.completion.values[99], "pty:mv-099");
        assert_eq!(many.completion.has_more, Some(true));
        assert_eq!(many.completion.total, Some(150));
    }

    #[test]
    fn screen_uris_round_trip_every_id() {
        for text in ["tmux:mv-7f3a", "pty:mv-19c2", "k8s:dev/mv-qwen-x2k9"] {
            let id: InstanceId = text.parse().unwrap();
            let uri = screen_uri(&id);
            let segment = &uri[SCREEN_PREFIX.len()..uri.len() - SCREEN_SUFFIX.len()];
            assert!(!segment.contains('/'), "one path segment: {uri}");
            assert_eq!(id_of_screen_uri(&uri).as_deref(), Some(text), "{uri}");
        }
        assert_eq!(id_of_screen_uri("mahavishnu://other"), None);
    }
}
