//! The pages, rendered on the server. Every value that reaches HTML goes through `escape` (a
//! session's screen, a project's path and a branch's name are anyone's text); the page's script
//! sets text with `textContent` only, and the Content Security Policy allows no inline script.

use std::fmt::Write;
use std::time::Duration;

use mahavishnu_core::{Instance, InstanceState};

/// Text as HTML text or attribute value.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page around `body`, with the dashboard's own style and script.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><link rel=\"icon\" href=\"data:,\">\
         <link rel=\"stylesheet\" href=\"/dashboard/assets/dashboard.css\">\
         <script src=\"/dashboard/assets/dashboard.js\" defer></script>\
         </head><body>\
         <nav><a href=\"/dashboard/\">Sessions</a> <a href=\"/dashboard/lifecycle\">Coding \
         sessions</a> <a href=\"/dashboard/deployments\">Deployments</a> <a \
         href=\"/dashboard/workflows\">Workflows</a> <a href=\"/dashboard/events\">Events</a></nav>\n\
         {body}</body></html>\n",
        escape(title)
    )
}

/// Which sessions a grid shows.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct Filter {
    /// A project directory (or below it).
    pub project: Option<String>,
    /// A profile.
    pub profile: Option<String>,
    /// A target.
    pub target: Option<String>,
    /// A state (`waiting`, `running`, ...).
    pub state: Option<String>,
}

impl Filter {
    /// Whether `instance` shows.
    pub fn shows(&self, instance: &Instance) -> bool {
        fn given(value: &Option<String>) -> Option<&str> {
            value.as_deref().filter(|v| !v.is_empty())
        }
        given(&self.project).is_none_or(|p| instance.project.to_string_lossy().starts_with(p))
            && given(&self.profile).is_none_or(|p| instance.profile == p)
            && given(&self.target).is_none_or(|t| instance.target.as_str() == t)
            && given(&self.state).is_none_or(|s| instance.state.name() == s)
    }
}

fn age(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m", seconds / 60),
        3600..86400 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86400),
    }
}

/// The lines a tile shows: the screen's last `TILE_LINES` lines once its blank bottom is cut off.
pub fn tile_text(screen: &str) -> String {
    let lines: Vec<&str> = screen.trim_end().lines().collect();
    let from = lines.len().saturating_sub(TILE_LINES);
    lines[from..].join("\n")
}

/// How many lines of its screen a tile shows.
pub const TILE_LINES: usize = 15;

/// One session's tile: its state, what it is, and its screen.
pub fn tile(instance: &Instance, screen: &str) -> String {
    let id = escape(&instance.id.to_string());
    let branch = instance
        .worktree
        .as_ref()
        .map(|w| escape(&w.branch))
        .unwrap_or_else(|| "-".into());
    let mut actions = String::new();
    // Every session shown can be closed: a live one is stopped, an ended one forgotten.
    let _ = write!(
        actions,
        "<button type=\"button\" data-action=\"close\" data-id=\"{id}\">Close</button>"
    );
    if instance.worktree.is_some() && instance.state.is_live() {
        let _ = write!(
            actions,
            "<button type=\"button\" data-action=\"pause\" data-id=\"{id}\">Pause</button>\
             <a href=\"/dashboard/sessions/{id}/diff\">Diff and merge</a>"
        );
    }
    if instance.state == InstanceState::Paused {
        let _ = write!(
            actions,
            "<button type=\"button\" data-action=\"resume\" data-id=\"{id}\">Resume</button>"
        );
    }
    format!(
        "<article class=\"tile state-{class}\" data-id=\"{id}\" data-state=\"{class}\">\
         <header><a class=\"name\" href=\"/dashboard/sessions/{id}\">{id}</a> \
         <span class=\"state\">{state}</span></header>\
         <p class=\"facts\"><span title=\"profile\">{profile}</span> · <span title=\"target\">{target}</span> \
         · <span title=\"project\">{project}</span> · <span title=\"branch\">{branch}</span> · \
         <span title=\"age\">{age}</span></p>\
         <pre class=\"screen\">{screen}</pre><p class=\"actions\">{actions}</p></article>\n",
        class = instance.state.name(),
        state = escape(&instance.state_label()),
        profile = escape(&instance.profile),
        target = escape(instance.target.as_str()),
        project = escape(&instance.project.to_string_lossy()),
        age = age(instance.created_at.age()),
        screen = escape(&tile_text(screen)),
    )
}

/// The tiles of the sessions `filter` shows, each with its screen.
pub fn tiles(instances: &[(Instance, String)], filter: &Filter) -> String {
    let shown: Vec<String> = instances
        .iter()
        .filter(|(instance, _)| filter.shows(instance))
        .map(|(instance, screen)| tile(instance, screen))
        .collect();
    if shown.is_empty() {
        return "<p class=\"empty\">No sessions here. Launch one below, or with `mahavishnu terminal \
                launch`.</p>\n"
            .into();
    }
    shown.concat()
}

/// The title that counts who waits.
pub fn title(waiting: usize) -> String {
    match waiting {
        0 => "Mahavishnu".into(),
        n => format!("({n} waiting) Mahavishnu"),
    }
}

fn select(name: &str, label: &str, values: &[String], chosen: Option<&str>) -> String {
    let mut options = format!("<option value=\"\">any {}</option>", escape(label));
    for value in values {
        let selected = if Some(value.as_str()) == chosen {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            options,
            "<option value=\"{v}\"{selected}>{v}</option>",
            v = escape(value)
        );
    }
    format!("<select name=\"{name}\">{options}</select>")
}

/// The grid: filters, the tiles, and the forms to launch and to send.
pub fn grid(
    instances: &[(Instance, String)],
    filter: &Filter,
    profiles: &[String],
    targets: &[String],
) -> String {
    let distinct = |pick: fn(&Instance) -> String| {
        let mut values: Vec<String> = instances.iter().map(|(i, _)| pick(i)).collect();
        values.sort();
        values.dedup();
        values
    };
    let projects = distinct(|i| i.project.to_string_lossy().into_owned());
    let states: Vec<String> = [
        "waiting", "running", "starting", "exited", "failed", "lost", "paused",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let waiting = instances
        .iter()
        .filter(|(i, _)| i.state == InstanceState::Waiting)
        .count();
    let mut profile_options = String::new();
    for profile in profiles {
        let _ = write!(profile_options, "<option>{}</option>", escape(profile));
    }
    let mut target_options = String::new();
    for target in targets {
        let _ = write!(target_options, "<option>{}</option>", escape(target));
    }
    let body = format!(
        "<main id=\"grid-page\">\
         <form class=\"filters\" method=\"get\" action=\"/dashboard/\">{project}{profile}{target}{state}\
         <button type=\"submit\">Filter</button></form>\
         <section id=\"grid\" class=\"grid\">{tiles}</section>\
         <form id=\"send-all\" class=\"bar\"><label>Send to every session shown \
         <input name=\"text\" required autocomplete=\"off\"></label> <button type=\"submit\">Send</button></form>\
         <form id=\"launch\" class=\"bar\"><label>Profile <select name=\"profile\">{profile_options}</select></label> \
         <label>Count <input name=\"count\" type=\"number\" min=\"1\" max=\"50\" value=\"1\"></label> \
         <label>Target <select name=\"target\">{target_options}</select></label> \
         <label><input name=\"worktree\" type=\"checkbox\"> own worktree</label> \
         <button type=\"submit\">Launch</button></form>\
         <p id=\"message\" role=\"status\"></p></main>",
        project = select("project", "project", &projects, filter.project.as_deref()),
        profile = select("profile", "profile", profiles, filter.profile.as_deref()),
        target = select("target", "target", targets, filter.target.as_deref()),
        state = select("state", "state", &states, filter.state.as_deref()),
        tiles = tiles(instances, filter),
    );
    page(&title(waiting), &body)
}

/// One session in a terminal of its own.
pub fn terminal(instance: &Instance) -> String {
    let id = escape(&instance.id.to_string());
    let body = format!(
        "<main id=\"terminal-page\" data-id=\"{id}\">\
         <header><h1>{id}</h1> <span class=\"state\">{state}</span> \
         <span class=\"facts\">{profile} · {target} · {project}</span></header>\
         <div id=\"terminal\"></div>\
         <p id=\"message\" role=\"status\"></p></main>\
         <link rel=\"stylesheet\" href=\"/dashboard/assets/xterm.css\">\
         <script src=\"/dashboard/assets/xterm.js\" defer></script>\
         <script src=\"/dashboard/assets/addon-fit.js\" defer></script>",
        state = escape(&instance.state_label()),
        profile = escape(&instance.profile),
        target = escape(instance.target.as_str()),
        project = escape(&instance.project.to_string_lossy()),
    );
    page(&format!("{} · Mahavishnu", instance.id), &body)
}

/// A worktree session's diff, as a diff, with the button that merges it.
pub fn diff(instance: &Instance, diff: &str) -> String {
    diff_page(
        &format!("{}: its work", instance.id),
        diff,
        Some(&instance.id.to_string()),
    )
}

/// A diff, coloured by line, and (for a worktree session, `merge`) the button that merges it.
pub fn diff_page(title: &str, diff: &str, merge: Option<&str>) -> String {
    let mut lines = String::new();
    for line in diff.lines() {
        let class = match line.as_bytes().first() {
            Some(b'+') if !line.starts_with("+++") => "add",
            Some(b'-') if !line.starts_with("---") => "del",
            Some(b'@') => "hunk",
            _ if line.starts_with("diff ") => "file",
            _ => "ctx",
        };
        let _ = writeln!(lines, "<span class=\"{class}\">{}</span>", escape(line));
    }
    let button = merge
        .map(|id| {
            format!(
                "<p><button type=\"button\" data-action=\"merge\" data-id=\"{}\">Merge into its \
                 base branch</button></p>",
                escape(id)
            )
        })
        .unwrap_or_default();
    let body = format!(
        "<main id=\"diff-page\"><h1>{}</h1><pre class=\"diff\">{lines}</pre>{button}\
         <p id=\"message\" role=\"status\"></p></main>",
        escape(title)
    );
    page(&format!("{title} · Mahavishnu"), &body)
}

/// The coding sessions page: hook runs, then checkpoints, each with a link to its diff.
pub fn lifecycle(
    intro: &str,
    runs: &[Vec<String>],
    checkpoints: &[(String, String, String)],
) -> String {
    let mut html = format!(
        "<main id=\"lifecycle-page\"><h1>Coding sessions</h1><p>{}</p><h2>Hook runs</h2><table>\
         <thead><tr><th>session</th><th>event</th><th>hook</th><th>result</th><th>exit code</th>\
         <th>ms</th><th>output</th></tr></thead><tbody>",
        escape(intro)
    );
    for run in runs {
        html.push_str("<tr>");
        for value in run {
            let _ = write!(html, "<td>{}</td>", escape(value));
        }
        html.push_str("</tr>");
    }
    html.push_str(
        "</tbody></table><h2>Checkpoints</h2><table><thead><tr><th>checkpoint</th><th>made</th>\
         <th>message</th></tr></thead><tbody>",
    );
    for (id, made, message) in checkpoints {
        let _ = write!(
            html,
            "<tr><td><a href=\"/dashboard/checkpoints/{id}\">{id}</a></td><td>{}</td><td>{}</td></tr>",
            escape(made),
            escape(message),
            id = escape(id),
        );
    }
    html.push_str("</tbody></table><p id=\"message\" role=\"status\"></p></main>");
    page("Coding sessions · Mahavishnu", &html)
}

/// A page that is a table of rows (already escaped cells are not accepted: every cell is text).
pub fn table(
    title: &str,
    intro: &str,
    header: &[&str],
    rows: &[Vec<String>],
    live: &str,
) -> String {
    let mut html = format!(
        "<main id=\"{live}\"><h1>{}</h1><p>{}</p><table><thead><tr>",
        escape(title),
        escape(intro)
    );
    for cell in header {
        let _ = write!(html, "<th>{}</th>", escape(cell));
    }
    html.push_str("</tr></thead><tbody>");
    push_rows(&mut html, rows);
    html.push_str("</tbody></table><p id=\"message\" role=\"status\"></p></main>");
    page(&format!("{title} · Mahavishnu"), &html)
}

/// A workflow's row: name, what it runs, when, next time, last run.
pub struct WorkflowRow {
    /// Its name.
    pub name: String,
    /// `sweep`, `check`, `agent`, `deploy`.
    pub runs: String,
    /// Its triggers, in words.
    pub when: String,
    /// Its next scheduled time.
    pub next: String,
    /// Its last run, or what is wrong with it.
    pub last: String,
}

/// A sweep's row: number, kind, state, start, how many succeeded, what it ran.
pub struct SweepRow {
    /// Its number.
    pub id: String,
    /// `command`, `agent`, `check`.
    pub kind: String,
    /// `running`, `done`, `interrupted`.
    pub state: String,
    /// When it started.
    pub started: String,
    /// `28/30`.
    pub ok: String,
    /// The command, the prompt, or `checks`.
    pub what: String,
}

/// The workflows of the configuration (each with a button to run it now) and the latest sweeps
/// (each a link to its results).
pub fn workflows(workflows: &[WorkflowRow], sweeps: &[SweepRow], note: &str) -> String {
    let mut html = String::from(
        "<main id=\"workflows-page\"><h1>Workflows</h1><table><thead><tr><th>workflow</th>\
         <th>runs</th><th>when</th><th>next</th><th>last run</th><th></th></tr></thead><tbody>",
    );
    for row in workflows {
        let _ = write!(
            html,
            "<tr><td>{name}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><button \
             data-action=\"run-workflow\" data-name=\"{name}\">Run now</button></td></tr>",
            escape(&row.runs),
            escape(&row.when),
            escape(&row.next),
            escape(&row.last),
            name = escape(&row.name),
        );
    }
    let _ = write!(
        html,
        "</tbody></table><p>{}</p><h2>Sweeps</h2><table><thead><tr><th>sweep</th><th>kind</th>\
         <th>state</th><th>started</th><th>ok</th><th>what</th></tr></thead><tbody>",
        escape(note)
    );
    for row in sweeps {
        let _ = write!(
            html,
            "<tr><td><a href=\"/dashboard/sweeps/{id}\">{id}</a></td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&row.kind),
            escape(&row.state),
            escape(&row.started),
            escape(&row.ok),
            escape(&row.what),
            id = escape(&row.id),
        );
    }
    html.push_str("</tbody></table><p id=\"message\" role=\"status\"></p></main>");
    page("Workflows · Mahavishnu", &html)
}

/// One sweep's results, with a button to run it again where it did not succeed.
pub fn sweep(id: &str, summary: &str, rows: &[Vec<String>], failed: bool) -> String {
    let mut html = format!(
        "<main id=\"sweep-page\"><h1>Sweep {}</h1><p>{}</p>",
        escape(id),
        escape(summary)
    );
    if failed {
        let _ = write!(
            html,
            "<p><button data-action=\"rerun-failed\" data-sweep=\"{}\">Run again where it \
             did not succeed</button></p>",
            escape(id)
        );
    }
    html.push_str(
        "<table><thead><tr><th>repository</th><th>status</th><th>exit</th><th>ms</th>\
         <th>last line</th></tr></thead><tbody>",
    );
    push_rows(&mut html, rows);
    html.push_str("</tbody></table><p id=\"message\" role=\"status\"></p></main>");
    page(&format!("Sweep {id} · Mahavishnu"), &html)
}

/// Rows of text cells, each escaped.
fn push_rows(html: &mut String, rows: &[Vec<String>]) {
    for row in rows {
        html.push_str("<tr>");
        for cell in row {
            let _ = write!(html, "<td>{}</td>", escape(cell));
        }
        html.push_str("</tr>");
    }
}

/// One service of a sandcastle, for its graph: what it is, what it needs, what it publishes and
/// what it takes from.
pub struct GraphService {
    /// Its name.
    pub name: String,
    /// Its kind (`http`, `worker`, `job`, `external`).
    pub kind: String,
    /// The services it calls.
    pub needs: Vec<String>,
    /// The topics it publishes to.
    pub publishes: Vec<String>,
    /// The topics it is pushed from.
    pub subscribes: Vec<String>,
}

/// The sandcastle as a picture: its waves from left to right (what is deployed first on the left),
/// its topics in a last column, and arrows for `needs`, publishing and subscribing. SVG, no script.
pub fn graph(waves: &[Vec<String>], services: &[GraphService]) -> String {
    const WIDTH: i64 = 150;
    const HEIGHT: i64 = 44;
    const GAP_X: i64 = 70;
    const GAP_Y: i64 = 26;
    let mut place: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
    for (column, wave) in waves.iter().enumerate() {
        for (row, name) in wave.iter().enumerate() {
            place.insert(
                name.clone(),
                (
                    column as i64 * (WIDTH + GAP_X),
                    row as i64 * (HEIGHT + GAP_Y),
                ),
            );
        }
    }
    let mut topics: Vec<String> = services
        .iter()
        .flat_map(|s| s.publishes.iter().chain(&s.subscribes).cloned())
        .collect();
    topics.sort();
    topics.dedup();
    let topic_column = waves.len() as i64 * (WIDTH + GAP_X);
    for (row, topic) in topics.iter().enumerate() {
        place.insert(
            format!("topic:{topic}"),
            (topic_column, row as i64 * (HEIGHT + GAP_Y)),
        );
    }
    let width = place
        .values()
        .map(|(x, _)| x + WIDTH)
        .max()
        .unwrap_or(WIDTH)
        + 10;
    let height = place
        .values()
        .map(|(_, y)| y + HEIGHT)
        .max()
        .unwrap_or(HEIGHT)
        + 10;
    let mut svg = format!(
        "<svg class=\"graph\" viewBox=\"-5 -5 {width} {height}\" width=\"{width}\" \
         height=\"{height}\" role=\"img\" aria-label=\"the sandcastle's services, needs and topics\">\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"6\" \
         markerHeight=\"6\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" class=\"arrowhead\"/></marker></defs>"
    );
    let line = |svg: &mut String, from: &str, to: &str, class: &str| {
        if let (Some((x1, y1)), Some((x2, y2))) = (place.get(from), place.get(to)) {
            let (x1, y1, x2, y2) = if x2 >= x1 {
                (x1 + WIDTH, y1 + HEIGHT / 2, *x2, y2 + HEIGHT / 2)
            } else {
                (*x1, y1 + HEIGHT / 2, x2 + WIDTH, y2 + HEIGHT / 2)
            };
            let _ = write!(
                svg,
                "<line class=\"{class}\" x1=\"{x1}\" y1=\"{y1}\" x2=\"{x2}\" y2=\"{y2}\" \
                 marker-end=\"url(#arrow)\"/>"
            );
        }
    };
    for service in services {
        for need in &service.needs {
            line(&mut svg, &service.name, need, "needs");
        }
        for topic in &service.publishes {
            line(
                &mut svg,
                &service.name,
                &format!("topic:{topic}"),
                "publishes",
            );
        }
        for topic in &service.subscribes {
            line(
                &mut svg,
                &format!("topic:{topic}"),
                &service.name,
                "subscribes",
            );
        }
    }
    for service in services {
        if let Some((x, y)) = place.get(&service.name) {
            let _ = write!(
                svg,
                "<g class=\"node {kind}\"><rect x=\"{x}\" y=\"{y}\" width=\"{WIDTH}\" \
                 height=\"{HEIGHT}\" rx=\"6\"/><text x=\"{tx}\" y=\"{ty}\">{name}</text>\
                 <text class=\"kind\" x=\"{tx}\" y=\"{ky}\">{kind}</text></g>",
                kind = escape(&service.kind),
                name = escape(&service.name),
                tx = x + 10,
                ty = y + 19,
                ky = y + 36,
            );
        }
    }
    for topic in &topics {
        if let Some((x, y)) = place.get(&format!("topic:{topic}")) {
            let _ = write!(
                svg,
                "<g class=\"node topic\"><rect x=\"{x}\" y=\"{y}\" width=\"{WIDTH}\" \
                 height=\"{HEIGHT}\" rx=\"20\"/><text x=\"{tx}\" y=\"{ty}\">{name}</text>\
                 <text class=\"kind\" x=\"{tx}\" y=\"{ky}\">topic</text></g>",
                name = escape(topic),
                tx = x + 14,
                ty = y + 19,
                ky = y + 36,
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// One revision's row on the deployments page.
pub struct RevisionRow {
    /// The region.
    pub region: String,
    /// The service.
    pub service: String,
    /// The revision.
    pub revision: String,
    /// Its share of traffic, 0 to 100.
    pub weight: u64,
    /// Its health's word.
    pub health: String,
}

/// The deployments page: the graph, then every region's revisions with their traffic as bars and
/// the buttons that release one or roll a service back.
pub fn deployments(title: &str, graph: &str, rows: &[RevisionRow], note: &str) -> String {
    let mut table = String::from(
        "<table><thead><tr><th>region</th><th>service</th><th>revision</th><th>traffic</th>\
         <th>health</th><th></th></tr></thead><tbody>",
    );
    for row in rows {
        let release = if row.weight < 100 {
            format!(
                "<button type=\"button\" data-action=\"release\" data-service=\"{s}\" \
                 data-revision=\"{r}\" data-region=\"{g}\">All traffic here</button>",
                s = escape(&row.service),
                r = escape(&row.revision),
                g = escape(&row.region),
            )
        } else {
            format!(
                "<button type=\"button\" data-action=\"rollback\" data-service=\"{s}\" \
                 data-region=\"{g}\">Roll back</button> <a href=\"/dashboard/deployments/{s}/logs\">Logs</a>",
                s = escape(&row.service),
                g = escape(&row.region),
            )
        };
        let _ = write!(
            table,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><meter min=\"0\" max=\"100\" value=\"{w}\">\
             {w}%</meter> {w}%</td><td class=\"health-{h}\">{h}</td><td>{release}</td></tr>",
            escape(&row.region),
            escape(&row.service),
            escape(&row.revision),
            w = row.weight,
            h = escape(&row.health),
        );
    }
    table.push_str("</tbody></table>");
    let body = format!(
        "<main id=\"deployments-page\"><h1>{}</h1><p>{}</p>{graph}{table}\
         <p id=\"message\" role=\"status\"></p></main>",
        escape(title),
        escape(note)
    );
    page(&format!("{title} · Mahavishnu"), &body)
}

/// A service's log lines as they come.
pub fn logs(service: &str) -> String {
    let body = format!(
        "<main id=\"logs-page\" data-service=\"{s}\"><h1>{s}: its logs</h1>\
         <pre id=\"log\" class=\"log\"></pre><p id=\"message\" role=\"status\"></p></main>",
        s = escape(service)
    );
    page(&format!("{service} logs · Mahavishnu"), &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_that_reaches_html_is_escaped() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
        let row = table(
            "t",
            "<b>",
            &["<i>"],
            &[vec!["<img src=x onerror=alert(1)>".into()]],
            "x",
        );
        assert!(!row.contains("<img"), "{row}");
        assert!(row.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert_eq!(title(0), "Mahavishnu");
        assert_eq!(title(3), "(3 waiting) Mahavishnu");
    }
}
