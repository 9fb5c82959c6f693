//! `loadfleet import jmeter`: a JMeter test plan (`.jmx`) turned into a
//! loadfleet plan. Thread groups become scenarios (and phases when the plan
//! runs them one after another), HTTP samplers steps, CSV data sets data
//! files, regular-expression extractors extractions, response assertions
//! checks, timers think times, and a shared Constant Throughput Timer the
//! fleet-wide throttle. `${__P(…)}` and `${__property(…)}` take `-J`
//! values, else their defaults. Every element that does not map is named
//! with why, on stderr and in the plan's comments; nothing is dropped
//! silently.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use roxmltree::Node;

use super::toml_text::{inline_table, string};

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `-J name=value`: JMeter properties for `${__P(…)}` and `${__property(…)}`.
    pub properties: BTreeMap<String, String>,
    /// Point the plan here instead of the JMX's HTTP defaults.
    pub base_url: Option<String>,
    /// The plan's name.
    pub name: String,
    /// The .jmx file (for comments, and to find CSV files beside it).
    pub source: PathBuf,
    /// Where the plan will be written (data file paths are made relative to it).
    pub out: PathBuf,
    /// `--moodle`: read Moodle's performance footer as metrics (also done
    /// for a plan Moodle's generator wrote, recognised by its variables).
    pub moodle: bool,
}

/// The TestPlan variables of the plan Moodle's test-plan generator writes.
const MOODLE_VARS: [&str; 4] = [
    "courseid",
    "pageactivityid",
    "forumactivityid",
    "forumdiscussionid",
];

/// The `[[metric]]`s that read Moodle 4.5's performance footer: those of
/// examples/moodle/plan.toml, one source for both.
fn moodle_footer_metrics() -> &'static str {
    const EXAMPLE: &str = include_str!("../../../examples/moodle/plan.toml");
    let from = EXAMPLE.find("[[metric]]").unwrap_or(0);
    let to = EXAMPLE.find("[[scenario]]").unwrap_or(EXAMPLE.len());
    EXAMPLE.get(from..to).unwrap_or("")
}

/// The plan, and what did not map.
#[derive(Debug)]
pub struct Imported {
    pub plan: String,
    pub steps: usize,
    pub scenarios: usize,
    /// Elements that do not map, or map only approximately, in a way that
    /// changes the load: `name: why` (what `--strict` refuses).
    pub unmapped: Vec<String>,
    /// Elements left out without changing what is sent (listeners,
    /// disabled elements): `name: why`.
    pub harmless: Vec<String>,
}

/// One JMeter element's properties, by name (`stringProp`, `boolProp`,
/// `intProp`, `longProp`, `doubleProp`), and its nested elements.
struct Props<'a, 'i> {
    node: Node<'a, 'i>,
}

impl<'a, 'i> Props<'a, 'i> {
    fn of(node: Node<'a, 'i>) -> Self {
        Props { node }
    }

    /// A simple property's text ("" when absent). A `doubleProp` or
    /// `floatProp` spells its name and value as child elements
    /// (`<doubleProp><name>x</name><value>1.0</value>…`).
    fn get(&self, name: &str) -> String {
        let child = |c: Node<'_, '_>, tag: &str| {
            c.children()
                .find(|v| v.has_tag_name(tag))
                .and_then(|v| v.text())
                .map(str::to_string)
        };
        for c in self.node.children().filter(Node::is_element) {
            let tag = c.tag_name().name();
            if !tag.ends_with("Prop") && !tag.ends_with("Property") {
                continue;
            }
            // `<FloatProperty>` (Throughput Controller's percent) too.
            let nested = tag == "doubleProp" || tag == "floatProp" || tag.ends_with("Property");
            let prop_name = if nested {
                child(c, "name")
            } else {
                c.attribute("name").map(str::to_string)
            };
            if prop_name.as_deref() == Some(name) {
                let value = if nested {
                    child(c, "value")
                } else {
                    c.text().map(str::to_string)
                };
                return value.unwrap_or_default();
            }
        }
        String::new()
    }

    fn bool(&self, name: &str) -> Option<bool> {
        match self.get(name).trim() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }

    /// A nested `elementProp` by name.
    fn element(&self, name: &str) -> Option<Props<'a, 'i>> {
        self.node
            .children()
            .find(|c| c.has_tag_name("elementProp") && c.attribute("name") == Some(name))
            .map(Props::of)
    }

    /// The items of a `collectionProp` by name.
    fn collection(&self, name: &str) -> Vec<Node<'a, 'i>> {
        self.node
            .children()
            .find(|c| c.has_tag_name("collectionProp") && c.attribute("name") == Some(name))
            .map(|c| c.children().filter(Node::is_element).collect())
            .unwrap_or_default()
    }
}

/// `(name, value)` pairs of an `Arguments` element.
fn arguments(args: &Props<'_, '_>) -> Vec<(String, String)> {
    args.collection("Arguments.arguments")
        .into_iter()
        .map(|a| {
            let p = Props::of(a);
            (p.get("Argument.name"), p.get("Argument.value"))
        })
        .collect()
}

/// A sampler's arguments as JMeter sends them in a form or a query that
/// loadfleet encodes: an argument whose "URL Encode?" is off
/// (`always_encode` false) holds text the user encoded already, which
/// JMeter decodes before its client encodes it again, so it is decoded
/// here too (outside `${…}`, whose run-time value is encoded as any).
/// A raw body or a multipart part sends its value as it is (`decode`
/// false).
fn sampler_arguments(args: &Props<'_, '_>, decode: bool) -> Vec<(String, String)> {
    args.collection("Arguments.arguments")
        .into_iter()
        .map(|a| {
            let p = Props::of(a);
            let (name, value) = (p.get("Argument.name"), p.get("Argument.value"));
            if decode && p.bool("HTTPArgument.always_encode") == Some(false) {
                (
                    url_decode_outside_vars(&name),
                    url_decode_outside_vars(&value),
                )
            } else {
                (name, value)
            }
        })
        .collect()
}

/// `application/x-www-form-urlencoded` decoding as Java's `URLDecoder`
/// (`+` is a space, `%XX` a byte, a malformed escape kept as it is), of the
/// text outside `${…}`.
fn url_decode_outside_vars(s: &str) -> String {
    fn decode(part: &str) -> String {
        let b = part.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' => match part
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                },
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&decode(&rest[..start]));
        match rest[start..].find('}') {
            Some(end) => {
                out.push_str(&rest[start..start + end + 1]);
                rest = &rest[start + end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(&decode(rest));
    out
}

/// The element and the `hashTree` of its children, pair by pair.
fn pairs<'a, 'i>(tree: Node<'a, 'i>) -> Vec<(Node<'a, 'i>, Option<Node<'a, 'i>>)> {
    let elems: Vec<Node<'a, 'i>> = tree.children().filter(Node::is_element).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < elems.len() {
        let e = elems[i];
        if e.has_tag_name("hashTree") {
            i += 1;
            continue;
        }
        let children = elems
            .get(i + 1)
            .filter(|n| n.has_tag_name("hashTree"))
            .copied();
        out.push((e, children));
        i += if children.is_some() { 2 } else { 1 };
    }
    out
}

fn label(e: Node<'_, '_>) -> String {
    format!(
        "{} \"{}\"",
        e.tag_name().name(),
        e.attribute("testname").unwrap_or("")
    )
}

fn enabled(e: Node<'_, '_>) -> bool {
    e.attribute("enabled") != Some("false")
}

/// Everything the conversion keeps track of.
struct Ctx<'o> {
    opts: &'o Options,
    vars: BTreeMap<String, String>,
    /// CSV variable name → `data.column`.
    csv_vars: BTreeMap<String, String>,
    /// (file, columns) of each data table written, by name: thread groups
    /// that read the same file share one table.
    csv_files: Vec<(String, Vec<String>, String)>,
    unmapped: Vec<String>,
    harmless: Vec<String>,
    /// `[[data]]` tables written so far.
    data: Vec<String>,
    clear_cookies: bool,
    /// The target: the first HTTP Request Defaults' (or sampler's) origin.
    base: Option<String>,
    /// A shared Constant Throughput Timer, as a throttle.
    throttle: Option<String>,
}

impl Ctx<'_> {
    fn note(&mut self, what: String) {
        if !self.unmapped.contains(&what) {
            self.unmapped.push(what);
        }
    }

    /// Left out without changing what is sent.
    fn aside(&mut self, what: String) {
        if !self.harmless.contains(&what) {
            self.harmless.push(what);
        }
    }

    /// Evaluates `${__P(name,default)}` and `${__property(name,name,default)}`
    /// from `-J` (else the default), and `${var}` of the test plan's own
    /// variables when `resolve_vars`; CSV and extracted variables become
    /// loadfleet templates (`${users.username}`). Other functions are
    /// noted and left out.
    fn eval(&mut self, text: &str, resolve_vars: bool, where_: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(at) = rest.find("${") {
            out.push_str(&rest[..at]);
            let after = &rest[at + 2..];
            // Functions nest parentheses: find the matching `}`.
            let mut depth = 0i32;
            let mut end = None;
            for (i, ch) in after.char_indices() {
                match ch {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    '}' if depth <= 0 => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let Some(end) = end else {
                out.push_str(&rest[at..]);
                return out;
            };
            let inner = &after[..end];
            rest = &after[end + 1..];
            out.push_str(&self.expand(inner, resolve_vars, where_));
        }
        out.push_str(rest);
        out
    }

    fn expand(&mut self, inner: &str, resolve_vars: bool, where_: &str) -> String {
        if let Some(call) = inner.strip_prefix("__") {
            let (func, args) = match call.split_once('(') {
                Some((f, a)) => (f, a.strip_suffix(')').unwrap_or(a)),
                None => (call, ""),
            };
            let args: Vec<&str> = args.split(',').map(str::trim).collect();
            let prop = |name: &str, default: &str| -> String {
                self.opts
                    .properties
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| default.to_string())
            };
            return match func {
                "P" => {
                    let v = prop(args[0], args.get(1).copied().unwrap_or(""));
                    self.eval(&v, resolve_vars, where_)
                }
                "property" => {
                    let v = prop(args[0], args.get(2).copied().unwrap_or(""));
                    self.eval(&v, resolve_vars, where_)
                }
                // Functions with a built-in variable of the same meaning.
                "time" if args.first().is_none_or(|a| a.is_empty()) => "${__time}".into(),
                "UUID" => "${__uuid}".into(),
                "threadNum" => "${__user}".into(),
                "iterationNum" => "${__iteration}".into(),
                "counter" => {
                    if args
                        .first()
                        .is_some_and(|a| a.eq_ignore_ascii_case("false"))
                    {
                        "${__fleet_counter}".into()
                    } else {
                        "${__counter}".into()
                    }
                }
                "Random" if args.len() >= 2 => {
                    let lo = self.eval(args[0], true, where_);
                    let hi = self.eval(args[1], true, where_);
                    match (lo.trim().parse::<i64>(), hi.trim().parse::<i64>()) {
                        (Ok(lo), Ok(hi)) if lo <= hi => format!("${{__random({lo},{hi})}}"),
                        _ => {
                            self.note(format!(
                                "function ${{__Random({})}} in {where_}: its bounds are not integers; left out",
                                args.join(",")
                            ));
                            String::new()
                        }
                    }
                }
                "V" if !args[0].is_empty() => format!("${{{}}}", args[0]),
                _ => {
                    self.note(format!(
                        "function ${{__{func}(…)}} in {where_}: not one loadfleet evaluates (it maps __P, __property, __time, __UUID, __Random, __threadNum, __iterationNum, __counter and __V); left out"
                    ));
                    String::new()
                }
            };
        }
        if let Some(col) = self.csv_vars.get(inner) {
            return format!("${{{col}}}");
        }
        if resolve_vars && let Some(v) = self.vars.get(inner).cloned() {
            return self.eval(&v, true, where_);
        }
        if self.vars.contains_key(inner) {
            // A plan variable: loadfleet's [vars] holds it.
            return format!("${{{inner}}}");
        }
        // An extracted variable, or one the plan never sets (validation says which).
        format!("${{{inner}}}")
    }
}

/// What one thread group became.
struct Group {
    name: String,
    /// The scheduler's startup delay, seconds.
    delay_s: u64,
    users: u64,
    ramp_s: u64,
    /// `None`: runs for `duration_s`.
    loops: Option<u64>,
    duration_s: Option<u64>,
    on_error: &'static str,
    steps: String,
    step_count: usize,
    /// An arrivals thread group's schedule (an arrival rate instead of
    /// users).
    arrivals: Option<Arrivals>,
}

/// A rate stage: arrivals (or requests) per second at its start and its
/// end, and its length in milliseconds.
type RateRow = (f64, f64, u64);

/// The bzm Arrivals and Free-Form Arrivals thread groups' schedule: rate
/// stages (arrivals per second at the start and at the end, and the length
/// in milliseconds), and the concurrency limit.
struct Arrivals {
    stages: Vec<RateRow>,
    max_users: Option<u64>,
}

/// What is in scope of a sampler: defaults, headers, extractors and
/// assertions from its parents.
#[derive(Clone, Default)]
struct Scope {
    domain: String,
    port: String,
    protocol: String,
    path: String,
    headers: Vec<(String, String)>,
    /// Timers in scope, each a pause before every sampler below (as
    /// JMeter runs them): the element's label and its think time.
    timers: Vec<(String, String)>,
    /// Counters in scope: label, variable, expression (a `set` at the
    /// start of each iteration).
    counters: Vec<(String, String, String)>,
    /// HTTP Request Defaults' own parameters: JMeter adds them to every
    /// sampler in scope.
    params: Vec<(String, String)>,
    /// A Throughput Shaping Timer in scope: its label and its rows
    /// (requests per second at the start and the end, milliseconds).
    shaping: Option<(String, Vec<RateRow>)>,
}

/// The most controllers nested in one another an import follows.
const MAX_DEPTH: usize = 48;

/// Step tables `depth` blocks deep: `[[scenario.step]]` written as
/// `[[scenario.step.step]]` one block down, and so on.
fn nest(text: &str, depth: usize) -> String {
    if depth == 0 {
        return text.to_string();
    }
    text.replace(
        "[[scenario.step",
        &format!("[[scenario{}", ".step".repeat(depth + 1)),
    )
}

/// A block's own table, `depth` blocks deep: `# From …`, the header and
/// its keys.
fn block(where_: &str, keys: &str, depth: usize) -> String {
    nest(
        &format!("\n# From {where_}.\n[[scenario.step]]\n{keys}\n"),
        depth,
    )
}

/// A pause step for a timer in scope, before a sampler.
fn pause(where_: &str, think: &str, depth: usize) -> String {
    nest(
        &format!(
            "\n# From {where_}: JMeter pauses before each sampler in its scope.\n[[scenario.step]]\nthink = {}\n",
            string(think)
        ),
        depth,
    )
}

fn to_u64(s: &str) -> Option<u64> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| *v >= 0.0)
        .map(|v| v as u64)
}

/// Converts the JMX text.
pub fn import(jmx: &str, opts: &Options) -> Result<Imported, String> {
    let source = opts.source.display().to_string();
    let doc = roxmltree::Document::parse(jmx).map_err(|e| {
        let p = e.pos();
        format!("{source}:{}:{}: not a JMeter plan (XML): {e}", p.row, p.col)
    })?;
    let root = doc.root_element();
    if !root.has_tag_name("jmeterTestPlan") {
        return Err(format!(
            "{source}: not a JMeter plan: expected <jmeterTestPlan>, found <{}>",
            root.tag_name().name()
        ));
    }
    let top = root
        .children()
        .find(|c| c.has_tag_name("hashTree"))
        .ok_or_else(|| format!("{source}: no <hashTree> under <jmeterTestPlan>"))?;
    let (plan_el, plan_tree) = pairs(top)
        .into_iter()
        .find(|(e, _)| e.has_tag_name("TestPlan"))
        .ok_or_else(|| format!("{source}: no <TestPlan> element"))?;
    let plan_props = Props::of(plan_el);
    let mut ctx = Ctx {
        opts,
        vars: BTreeMap::new(),
        csv_vars: BTreeMap::new(),
        csv_files: Vec::new(),
        unmapped: Vec::new(),
        harmless: Vec::new(),
        data: Vec::new(),
        clear_cookies: false,
        base: None,
        throttle: None,
    };
    if let Some(udv) = plan_props.element("TestPlan.user_defined_variables") {
        for (k, v) in arguments(&udv) {
            if !k.is_empty() {
                ctx.vars.insert(k, v);
            }
        }
    }
    // Variables are evaluated once, in order, as JMeter does at the start.
    let names: Vec<String> = ctx.vars.keys().cloned().collect();
    for k in names {
        let raw = ctx.vars[&k].clone();
        let v = ctx.eval(&raw, true, &format!("variable `{k}`"));
        ctx.vars.insert(k, v);
    }
    let serialize = plan_props.bool("TestPlan.serialize_threadgroups") == Some(true);
    let plan_children = plan_tree.map(pairs).unwrap_or_default();

    let mut groups: Vec<Group> = Vec::new();
    // Plan-level elements apply to every thread group: defaults, headers,
    // timers, data, cookies, variables, extractors and assertions.
    let mut plan_scope = Scope::default();
    let mut plan_attached = Vec::new();
    configure(
        &mut ctx,
        &plan_children,
        &mut plan_scope,
        &mut plan_attached,
        None,
    )?;
    for (e, children) in &plan_children {
        let tag = e.tag_name().name();
        if !enabled(*e) {
            ctx.aside(format!("{}: disabled in the JMX; left out", label(*e)));
            continue;
        }
        match tag {
            t if is_thread_group(t) => {
                if tag != "ThreadGroup" && !tag.contains('.') {
                    ctx.note(format!(
                        "{}: run as an ordinary thread group, in its place in the plan",
                        label(*e)
                    ));
                }
                let g = thread_group(&mut ctx, *e, *children, &plan_scope, &plan_attached)?;
                groups.push(g);
            }
            t if is_config(t) => {}
            _ => note_unmapped(&mut ctx, *e),
        }
    }
    let mut groups: Vec<Group> = groups.into_iter().filter(|g| g.step_count > 0).collect();
    // Scenario names are unique: a second "Thread Group" is "Thread Group (2)".
    let mut seen: Vec<String> = Vec::new();
    for g in &mut groups {
        let mut name = g.name.clone();
        let mut n = 1;
        while seen.contains(&name) {
            n += 1;
            name = format!("{} ({n})", g.name);
        }
        if name != g.name {
            ctx.note(format!(
                "ThreadGroup \"{}\": a second thread group of that name; its scenario is \"{name}\"",
                g.name
            ));
            g.name = name.clone();
        }
        seen.push(name);
    }
    if groups.is_empty() {
        return Err(format!(
            "{source}: no thread group with an HTTP request to turn into a scenario"
        ));
    }
    if let Some((timer, _)) = &plan_scope.shaping
        && groups.len() > 1
    {
        ctx.note(format!(
            "{timer}: at TestPlan level JMeter shapes all {} thread groups' requests together; here each thread group has the whole rate",
            groups.len()
        ));
    }
    let (base, mut throttle, clear_cookies) =
        (ctx.base.clone(), ctx.throttle.clone(), ctx.clear_cookies);
    // A throttle caps users; beside an arrival rate (which sets its own
    // pace) the plan refuses one.
    if throttle.is_some() && groups.iter().any(|g| g.arrivals.is_some()) {
        ctx.note(
            "the Constant Throughput Timer: not applied beside an arrivals thread group, whose rate sets the pace (a throttle caps users, and a plan refuses one beside a rate)".into(),
        );
        throttle = None;
    }
    let data = std::mem::take(&mut ctx.data);
    let base_url = match (&opts.base_url, &base) {
        (Some(b), _) => b.trim_end_matches('/').to_string(),
        (None, Some(b)) => b.clone(),
        (None, None) => {
            return Err(format!(
                "{source}: no server named in HTTP Request Defaults or the samplers; give --base-url"
            ));
        }
    };

    let mut plan = String::new();
    let steps: usize = groups.iter().map(|g| g.step_count).sum();
    let _ = writeln!(
        plan,
        "# Imported from {source} by `loadfleet import jmeter`: {} thread group(s), {steps} HTTP sampler(s).",
        groups.len()
    );
    if opts.base_url.is_some()
        && let Some(b) = &base
    {
        let _ = writeln!(
            plan,
            "# The JMX's HTTP defaults name {b}; pointed at {base_url}."
        );
    }
    if !opts.properties.is_empty() {
        let props: Vec<String> = opts
            .properties
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(plan, "# JMeter properties (-J): {}", props.join(", "));
    }
    for u in &ctx.unmapped {
        let _ = writeln!(plan, "# NOT MAPPED: {u}");
    }
    for u in &ctx.harmless {
        let _ = writeln!(plan, "# LEFT OUT (the load is the same): {u}");
    }
    let _ = writeln!(plan, "name = {}", string(&opts.name));
    let _ = writeln!(
        plan,
        "\n# From HTTP Request Defaults (or the first sampler's server).\n[target]\nbase_url = {}",
        string(&base_url)
    );
    // A thread group's load as `key = value` entries: users (or an
    // arrivals thread group's rate stages), its bound, and the throttle.
    let load = |g: &Group, throttle: &Option<String>| -> Vec<String> {
        let mut l = Vec::new();
        if let Some(a) = &g.arrivals {
            let stages: Vec<String> = a
                .stages
                .iter()
                .map(|&(from, to, ms)| {
                    format!("{{ from = {from}, rate = {to}, duration = \"{ms}ms\" }}")
                })
                .collect();
            l.push(format!("stages = [{}]", stages.join(", ")));
            if let Some(m) = a.max_users {
                l.push(format!("max_users = {m}"));
            }
            // A throttle caps users; an arrival rate sets its own pace.
            return l;
        }
        l.push(format!("users = {}", g.users.max(1)));
        l.push(format!("ramp_up = \"{}s\"", g.ramp_s));
        match (g.loops, g.duration_s) {
            (Some(n), _) => l.push(format!("iterations = {}", n.max(1))),
            (None, Some(d)) => l.push(format!("duration = \"{}s\"", d.max(1))),
            (None, None) => l.push("iterations = 1".into()),
        }
        if let Some(t) = throttle {
            l.push(format!("throttle = {}", string(t)));
        }
        l
    };
    if groups.len() > 1 && serialize {
        let _ = writeln!(
            plan,
            "\n# The thread groups run one after another (TestPlan.serialize_threadgroups): one phase each, reported apart."
        );
        for g in &groups {
            let _ = writeln!(
                plan,
                "\n# From ThreadGroup {}.\n[[phase]]\nname = {}\nscenarios = [{}]\nload = {{ {} }}",
                string(&g.name),
                string(&g.name),
                string(&g.name),
                load(g, &throttle).join(", ")
            );
        }
    } else {
        let g = &groups[0];
        if groups.len() > 1 {
            // Thread groups run at once: each scenario its own load.
            let _ = writeln!(
                plan,
                "\n# The thread groups run at once, each with its own users, ramp-up, loops or duration and delay: a [scenario.load] each."
            );
            if let Some(t) = &throttle {
                let _ = writeln!(plan, "[load]\nthrottle = {}", string(t));
            }
        } else {
            let _ = writeln!(
                plan,
                "\n# From ThreadGroup {}.\n[load]\n{}",
                string(&g.name),
                load(g, &throttle).join("\n")
            );
        }
    }
    if !ctx.vars.is_empty() {
        let _ = writeln!(
            plan,
            "\n# From the TestPlan's user-defined variables.\n[vars]"
        );
        for (k, v) in &ctx.vars {
            if is_name(k) {
                let _ = writeln!(plan, "{k} = {}", string(v));
            }
        }
    }
    if clear_cookies {
        let _ = writeln!(
            plan,
            "\n# From CookieManager (clearEachIteration).\n[session]\nclear_cookies_each_iteration = true"
        );
    }
    for d in &data {
        plan.push_str(d);
    }
    let generated = MOODLE_VARS.iter().all(|v| ctx.vars.contains_key(*v));
    if opts.moodle || generated {
        let _ = writeln!(
            plan,
            "\n# Moodle's performance footer ({}), read on every page as\n# metrics (Moodle's own plan reads it with a BeanShell listener). Pages\n# show it with Site administration > Development > Debugging >\n# \"Performance info\" on; a page without it counts as missing, never zero.\n{}",
            if opts.moodle {
                "--moodle"
            } else {
                "a plan of Moodle's generator: its TestPlan names courseid, pageactivityid, forumactivityid and forumdiscussionid"
            },
            moodle_footer_metrics().trim_end()
        );
    }
    for g in &groups {
        let _ = writeln!(
            plan,
            "\n# From ThreadGroup {} (on_sample_error → on_error).\n[[scenario]]\nname = {}\non_error = \"{}\"",
            string(&g.name),
            string(&g.name),
            g.on_error
        );
        if groups.len() > 1 && !serialize {
            let mut l = load(g, &None).join("\n");
            if g.delay_s > 0 {
                let _ = write!(l, "\nstart = \"{}s\"", g.delay_s);
            }
            let _ = writeln!(plan, "[scenario.load]\n{l}");
        }
        plan.push_str(&g.steps);
    }
    // The comments at the top list what did not map; a late addition
    // (groups run at once) goes there too.
    let header_end = plan.find("name = ").unwrap_or(0);
    let listed: Vec<String> = ctx
        .unmapped
        .iter()
        .filter(|u| !plan[..header_end].contains(u.as_str()))
        .map(|u| format!("# NOT MAPPED: {u}\n"))
        .collect();
    plan.insert_str(header_end, &listed.concat());
    Ok(Imported {
        plan,
        steps,
        scenarios: groups.len(),
        unmapped: ctx.unmapped,
        harmless: ctx.harmless,
    })
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A Constant Throughput Timer as a throttle ("N/min"), when it is shared
/// by all threads; `threads` for a per-thread timer.
fn throughput(ctx: &mut Ctx<'_>, e: Node<'_, '_>, threads: Option<u64>) -> Option<String> {
    let p = Props::of(e);
    let raw = p.get("throughput");
    let per_min: f64 = ctx
        .eval(&raw, true, &label(e))
        .trim()
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v > 0.0)?;
    let mode = p.get("calcMode");
    let mode = mode.trim();
    match mode {
        // All active threads (shared), and in the current thread group (shared).
        "3"
        | "4"
        | "all active threads (shared)"
        | "all active threads in current thread group (shared)" => Some(format!("{per_min}/min")),
        _ => {
            let users = threads.unwrap_or(1).max(1);
            ctx.note(format!(
                "{} calcMode {mode}: a per-thread target; approximated as a shared throttle of {per_min}/min × {users} users",
                label(e)
            ));
            Some(format!("{}/min", per_min * users as f64))
        }
    }
}

fn note_unmapped(ctx: &mut Ctx<'_>, e: Node<'_, '_>) {
    let tag = e.tag_name().name();
    if tag == "ResultCollector"
        || tag.ends_with("Listener")
        || tag == "Summariser"
        || tag.ends_with("Visualizer")
    {
        ctx.aside(format!(
            "{}: a listener: loadfleet writes its own results (summary.json, the report); left out",
            label(e)
        ));
        return;
    }
    let why = if tag.contains("BeanShell") || tag.starts_with("JSR223") || tag.contains("BSF") {
        "a script: loadfleet runs no JMeter scripts"
    } else if tag.ends_with("Sampler") || tag.ends_with("SamplerProxy") {
        "a sampler of another protocol: loadfleet sends HTTP requests only"
    } else {
        "not an element loadfleet imports"
    };
    ctx.note(format!("{}: {why}; left out", label(e)));
}

fn thread_group<'a, 'i>(
    ctx: &mut Ctx<'_>,
    e: Node<'a, 'i>,
    children: Option<Node<'a, 'i>>,
    plan_scope: &Scope,
    plan_attached: &[Node<'a, 'i>],
) -> Result<Group, String> {
    let p = Props::of(e);
    let name = e
        .attribute("testname")
        .unwrap_or("thread group")
        .to_string();
    let where_ = label(e);
    let num = |ctx: &mut Ctx<'_>, key: &str| {
        let v = p.get(key);
        ctx.eval(&v, true, &where_)
    };
    let plugin = plugin_schedule(ctx, e, e.tag_name().name());
    let arrivals = arrivals_schedule(ctx, e, e.tag_name().name());
    let users_text = num(ctx, "ThreadGroup.num_threads");
    let users = to_u64(&users_text).unwrap_or_else(|| {
        if plugin.is_none() && arrivals.is_none() {
            ctx.note(format!(
                "{where_} num_threads \"{users_text}\": not a number; 1 user"
            ));
        }
        1
    });
    let ramp_s = to_u64(&num(ctx, "ThreadGroup.ramp_time")).unwrap_or(0);
    let main = p.element("ThreadGroup.main_controller");
    let loops_text = main
        .as_ref()
        .map(|m| {
            let v = m.get("LoopController.loops");
            ctx.eval(&v, true, &where_)
        })
        .unwrap_or_default();
    let forever = main
        .as_ref()
        .and_then(|m| m.bool("LoopController.continue_forever"))
        == Some(true)
        || loops_text.trim() == "-1";
    let scheduler = p.bool("ThreadGroup.scheduler") == Some(true);
    let duration_s = to_u64(&num(ctx, "ThreadGroup.duration")).filter(|d| *d > 0);
    let delay_s = if scheduler {
        to_u64(&num(ctx, "ThreadGroup.delay")).unwrap_or(0)
    } else {
        0
    };
    let own_schedule = plugin.is_some() || arrivals.is_some();
    let (loops, duration_s) = if own_schedule {
        // Read from the plugin's own properties below.
        (None, None)
    } else if scheduler && duration_s.is_some() {
        if !forever {
            ctx.note(format!(
                "{where_}: loops and a scheduler duration; the duration bounds the run here (each user iterates until it ends)"
            ));
        }
        (None, duration_s)
    } else if forever {
        ctx.note(format!(
            "{where_}: loops forever without a scheduler duration; one iteration here (give the plan a duration)"
        ));
        (Some(1), None)
    } else {
        (Some(to_u64(&loops_text).unwrap_or(1).max(1)), None)
    };
    // Plugin thread groups: their own schedule properties.
    let (users, ramp_s, loops, duration_s, delay_s) =
        plugin.unwrap_or((users, ramp_s, loops, duration_s, delay_s));
    let on_error = match p.get("ThreadGroup.on_sample_error").trim() {
        "startnextloop" | "startnextithread" => "next_iteration",
        "stopthread" => "stop_user",
        "stoptest" | "stoptestnow" => {
            ctx.note(format!(
                "{where_} on_sample_error {}: stops only the user here, not the whole test",
                p.get("ThreadGroup.on_sample_error")
            ));
            "stop_user"
        }
        _ => "continue",
    };
    let mut g = Group {
        delay_s,
        name,
        users,
        ramp_s,
        loops,
        duration_s,
        on_error,
        steps: String::new(),
        step_count: 0,
        arrivals,
    };
    if let Some(children) = children {
        // A thread group's own defaults apply to it alone.
        let mut scope = plan_scope.clone();
        let (steps, count) = walk(ctx, pairs(children), &mut scope, &g, plan_attached, 0)?;
        let mut head = String::new();
        for (where_, name, expr) in &scope.counters {
            let _ = writeln!(
                head,
                "\n# From {where_}: a counter, set as each iteration starts.\n[[scenario.step]]\nset = {{ {name} = {} }}",
                template_string(expr)
            );
        }
        g.steps = head + &steps;
        g.step_count = count;
        if let Some((timer, rows)) = scope.shaping.take() {
            shape(ctx, &mut g, &timer, rows);
        }
    }
    Ok(g)
}

/// A Throughput Shaping Timer over a thread group: JMeter holds its
/// threads back so that their requests follow the timer's schedule. Here
/// the group becomes an arrival rate of iterations (the requests' rate
/// over the samplers an iteration sends), at most its threads at once.
fn shape(ctx: &mut Ctx<'_>, g: &mut Group, timer: &str, rows: Vec<RateRow>) {
    if g.arrivals.is_some() {
        ctx.note(format!(
            "{timer}: beside an arrivals thread group's own rate; not applied"
        ));
        return;
    }
    if rows.iter().all(|r| r.0 == 0.0 && r.1 == 0.0) || g.step_count == 0 {
        ctx.note(format!("{timer}: no rows with a rate; not applied"));
        return;
    }
    let per = g.step_count as f64;
    if g.step_count > 1 {
        ctx.note(format!(
            "{timer}: requests per second become {} times fewer iterations per second here (an iteration of \"{}\" sends {} requests when none is skipped or repeated)",
            g.step_count, g.name, g.step_count
        ));
    }
    ctx.note(format!(
        "{timer}: thread group \"{}\" runs as an arrival rate (the open model) of at most {} users at once, its threads; JMeter holds its threads back instead",
        g.name, g.users
    ));
    g.arrivals = Some(Arrivals {
        stages: rows
            .into_iter()
            .map(|(a, b, ms)| (a / per, b / per, ms))
            .collect(),
        max_users: Some(g.users.max(1)),
    });
}

/// Whether a plan-level element is a thread group of JMeter's or of a
/// common plugin's.
fn is_thread_group(tag: &str) -> bool {
    matches!(tag, "ThreadGroup" | "SetupThreadGroup" | "PostThreadGroup")
        || tag.ends_with("ArrivalsThreadGroup")
        || tag.ends_with("ConcurrencyThreadGroup")
        || tag.ends_with("UltimateThreadGroup")
        || tag.ends_with("SteppingThreadGroup")
}

/// A plugin thread group's schedule as users, ramp-up, loops, duration
/// and delay (seconds), said where it is approximate; `None` for JMeter's
/// own thread groups.
#[allow(clippy::type_complexity)]
fn plugin_schedule(
    ctx: &mut Ctx<'_>,
    e: Node<'_, '_>,
    tag: &str,
) -> Option<(u64, u64, Option<u64>, Option<u64>, u64)> {
    let p = Props::of(e);
    let where_ = label(e);
    let mut num = |k: &str| to_u64(&ctx.eval(&p.get(k), true, &where_));
    if tag.ends_with("ConcurrencyThreadGroup") {
        // bzm Concurrency: TargetLevel users, ramped over RampUp in Steps,
        // held for Hold; the unit is seconds or minutes.
        let unit = if p.get("Unit").trim() == "M" { 60 } else { 1 };
        let users = num("TargetLevel").unwrap_or(1);
        let ramp = num("RampUp").unwrap_or(0) * unit;
        let hold = num("Hold").unwrap_or(0) * unit;
        let steps = num("Steps").unwrap_or(0);
        let iterations = num("Iterations").filter(|n| *n > 0);
        if steps > 0 {
            ctx.note(format!(
                "{where_}: its ramp in {steps} steps is a linear ramp-up of {ramp} s here"
            ));
        }
        if let Some(n) = iterations {
            ctx.note(format!(
                "{where_}: its limit of {n} iterations is not mapped; users iterate for {} s",
                ramp + hold
            ));
        }
        return Some((users, ramp, None, Some((ramp + hold).max(1)), 0));
    }
    if tag.ends_with("SteppingThreadGroup") {
        let users = num("ThreadGroup.num_threads").unwrap_or(1);
        let batch = num("Start users count").unwrap_or(1).max(1);
        let period = num("Start users period").unwrap_or(0);
        let delay = num("Threads initial delay").unwrap_or(0);
        let flight = num("flighttime").unwrap_or(0);
        let ramp = users.div_ceil(batch) * period;
        ctx.note(format!(
            "{where_}: {users} users started {batch} every {period} s is a linear ramp-up of {ramp} s here; its ramp-down is not mapped"
        ));
        return Some((users, ramp, None, Some((ramp + flight).max(1)), delay));
    }
    if tag.ends_with("UltimateThreadGroup") {
        let rows = p.collection("ultimatethreadgroupdata");
        let first = rows.first()?;
        let cells: Vec<u64> = first
            .children()
            .filter(|c| c.is_element())
            .map(|c| to_u64(&ctx.eval(c.text().unwrap_or(""), true, &where_)).unwrap_or(0))
            .collect();
        let cell = |i: usize| cells.get(i).copied().unwrap_or(0);
        if rows.len() > 1 {
            ctx.note(format!(
                "{where_}: only its first row of {} is mapped",
                rows.len()
            ));
        }
        // threads, initial delay, startup time, hold load for, shutdown.
        return Some((
            cell(0).max(1),
            cell(2),
            None,
            Some((cell(2) + cell(3)).max(1)),
            cell(1),
        ));
    }
    None
}

/// The bzm Arrivals thread groups' schedule as rate stages: the Arrivals
/// one ramps linearly (or in `Steps` steps) to `TargetLevel` arrivals per
/// unit over `RampUp` and holds it for `Hold`; the Free-Form one has rows
/// of (start rate, end rate, length). The unit is the second or, with
/// `Unit` "M", the minute (rates per minute, lengths in minutes).
fn arrivals_schedule(ctx: &mut Ctx<'_>, e: Node<'_, '_>, tag: &str) -> Option<Arrivals> {
    if !tag.ends_with("ArrivalsThreadGroup") {
        return None;
    }
    let p = Props::of(e);
    let where_ = label(e);
    let num = |ctx: &mut Ctx<'_>, k: &str| {
        ctx.eval(&p.get(k), true, &where_)
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    let factor = if p.get("Unit").trim() == "M" {
        60.0
    } else {
        1.0
    };
    let ms = |units: f64| (units * factor * 1000.0).round() as u64;
    let mut stages = Vec::new();
    if tag.ends_with("FreeFormArrivalsThreadGroup") {
        for row in p.collection("Schedule") {
            let cells: Vec<f64> = row
                .children()
                .filter(|c| c.is_element())
                .map(|c| {
                    ctx.eval(c.text().unwrap_or(""), true, &where_)
                        .trim()
                        .parse::<f64>()
                        .unwrap_or(0.0)
                        .max(0.0)
                })
                .collect();
            let cell = |i: usize| cells.get(i).copied().unwrap_or(0.0);
            if ms(cell(2)) > 0 {
                stages.push((cell(0) / factor, cell(1) / factor, ms(cell(2))));
            }
        }
    } else {
        let rate = num(ctx, "TargetLevel").unwrap_or(1.0) / factor;
        // JMeter rounds the ramp-up and hold to whole seconds.
        let ramp_ms = (num(ctx, "RampUp").unwrap_or(0.0) * factor).round() as u64 * 1000;
        let hold_ms = (num(ctx, "Hold").unwrap_or(0.0) * factor).round() as u64 * 1000;
        let steps = num(ctx, "Steps").unwrap_or(0.0) as u64;
        if ramp_ms > 0 && steps > 0 {
            // Each step holds its level: step k of n at rate (k+1)/n.
            let len = ramp_ms / steps;
            for k in 0..steps {
                let level = rate * (k + 1) as f64 / steps as f64;
                let len = if k + 1 == steps {
                    ramp_ms - len * k
                } else {
                    len
                };
                stages.push((level, level, len));
            }
        } else if ramp_ms > 0 {
            stages.push((0.0, rate, ramp_ms));
        }
        if hold_ms > 0 {
            stages.push((rate, rate, hold_ms));
        }
        if let Some(n) = num(ctx, "ArrivalsLimit").filter(|n| *n > 0.0) {
            ctx.note(format!(
                "{where_}: its limit of {n} arrivals in all is not mapped; arrivals follow the schedule to its end"
            ));
        }
    }
    if let Some(n) = num(ctx, "Iterations").filter(|n| *n > 0.0) {
        ctx.note(format!(
            "{where_}: its limit of {n} iterations per thread is not mapped; each arrival is one iteration"
        ));
    }
    if stages.iter().all(|s| s.0 == 0.0 && s.1 == 0.0) {
        ctx.note(format!(
            "{where_}: its schedule has no arrivals (JMeter starts none); 1 arrival per second for 1 s here"
        ));
        stages = vec![(1.0, 1.0, 1000)];
    }
    let max_users = num(ctx, "ConcurrencyLimit")
        .map(|n| n as u64)
        .filter(|n| *n > 0);
    if max_users.is_none() {
        ctx.note(format!(
            "{where_}: no concurrency limit; at most {} users at once here (the open model's default)",
            crate::plan::DEFAULT_MAX_USERS
        ));
    }
    Some(Arrivals { stages, max_users })
}

/// Post-processors and assertions in scope of a sampler, as step lines.
struct Attached {
    lines: String,
    /// `check = { … }` parts.
    status: Vec<String>,
    contains: Vec<String>,
    matches: Vec<String>,
    not_matches: Vec<String>,
    headers: Vec<String>,
    headers_not: Vec<String>,
}

/// Whether an element configures its scope rather than running in order.
fn is_config(tag: &str) -> bool {
    matches!(
        tag,
        "ConfigTestElement"
            | "CSVDataSet"
            | "CookieManager"
            | "HeaderManager"
            | "ConstantTimer"
            | "UniformRandomTimer"
            | "GaussianRandomTimer"
            | "PoissonRandomTimer"
            | "ConstantThroughputTimer"
            | "kg.apc.jmeter.timers.VariableThroughputTimer"
            | "RegexExtractor"
            | "JSONPostProcessor"
            | "HtmlExtractor"
            | "BoundaryExtractor"
            | "XPathExtractor"
            | "XPath2Extractor"
            | "ResponseAssertion"
            | "Arguments"
            | "CounterConfig"
    )
}

/// The HTTP samplers in a subtree (for what is lost with an element).
fn samplers_in(children: Option<Node<'_, '_>>) -> usize {
    children.map_or(0, |c| {
        c.descendants()
            .filter(|d| d.has_tag_name("HTTPSamplerProxy") || d.has_tag_name("HTTPSampler"))
            .filter(|d| enabled(*d))
            .count()
    })
}

/// What a scope's configuration elements set, wherever they sit in it:
/// defaults, data, cookies, headers (merged as JMeter merges them: the
/// nearer manager wins per header name), timers, variables, and extractors
/// or assertions that apply to every sampler below.
fn configure<'a, 'i>(
    ctx: &mut Ctx<'_>,
    items: &[(Node<'a, 'i>, Option<Node<'a, 'i>>)],
    scope: &mut Scope,
    attached: &mut Vec<Node<'a, 'i>>,
    threads: Option<u64>,
) -> Result<(), String> {
    for (e, _) in items {
        if !enabled(*e) {
            continue;
        }
        let p = Props::of(*e);
        match e.tag_name().name() {
            "ConfigTestElement" => {
                let mut eval = |k: &str| {
                    let v = p.get(k);
                    ctx.eval(&v, true, &label(*e))
                };
                let (d, port, proto, path) = (
                    eval("HTTPSampler.domain"),
                    eval("HTTPSampler.port"),
                    eval("HTTPSampler.protocol"),
                    eval("HTTPSampler.path"),
                );
                if !d.is_empty() {
                    scope.domain = d;
                }
                if !port.is_empty() {
                    scope.port = port;
                }
                if !proto.is_empty() {
                    scope.protocol = proto;
                }
                if !path.is_empty() {
                    scope.path = path;
                }
                if let Some(a) = p.element("HTTPsampler.Arguments") {
                    for (k, v) in arguments(&a) {
                        let v = ctx.eval(&v, false, &label(*e));
                        if !k.is_empty() {
                            scope.params.push((k, v));
                        }
                    }
                }
            }
            "CSVDataSet" => csv(ctx, *e)?,
            "CookieManager" if p.bool("CookieManager.clearEachIteration") == Some(true) => {
                ctx.clear_cookies = true;
            }
            "HeaderManager" => {
                let own = headers_of(ctx, *e);
                merge_headers(&mut scope.headers, own);
            }
            "ConstantTimer"
            | "UniformRandomTimer"
            | "GaussianRandomTimer"
            | "PoissonRandomTimer" => {
                if let Some(t) = timer(ctx, *e) {
                    scope.timers.push((label(*e), t));
                }
            }
            "ConstantThroughputTimer" => {
                ctx.throttle = throughput(ctx, *e, threads);
            }
            t if t.ends_with("VariableThroughputTimer") => {
                // Rows of (start RPS, end RPS, seconds).
                let rows = p
                    .collection("load_profile")
                    .into_iter()
                    .map(|row| {
                        let cells: Vec<f64> = row
                            .children()
                            .filter(|c| c.is_element())
                            .map(|c| {
                                ctx.eval(c.text().unwrap_or(""), true, &label(*e))
                                    .trim()
                                    .parse::<f64>()
                                    .unwrap_or(0.0)
                                    .max(0.0)
                            })
                            .collect();
                        let cell = |i: usize| cells.get(i).copied().unwrap_or(0.0);
                        (cell(0), cell(1), (cell(2) * 1000.0).round() as u64)
                    })
                    .filter(|r| r.2 > 0)
                    .collect();
                scope.shaping = Some((label(*e), rows));
            }
            "RegexExtractor" | "ResponseAssertion" | "JSONPostProcessor" | "HtmlExtractor"
            | "BoundaryExtractor" | "XPathExtractor" | "XPath2Extractor" => attached.push(*e),
            "Arguments" => {
                for (k, v) in arguments(&p) {
                    let v = ctx.eval(&v, true, &format!("variable `{k}`"));
                    ctx.vars.insert(k, v);
                }
            }
            "CounterConfig" => counter(ctx, *e, scope),
            _ => {}
        }
    }
    Ok(())
}

/// A Counter as a `set` at the start of each iteration: per user, start +
/// (iteration − 1) × increment; shared by all users, the fleet-wide
/// counter (unique, increasing per user, not consecutive).
fn counter(ctx: &mut Ctx<'_>, e: Node<'_, '_>, scope: &mut Scope) {
    let p = Props::of(e);
    let where_ = label(e);
    let name = p.get("CounterConfig.name");
    if !is_name(name.trim()) {
        ctx.note(format!(
            "{where_}: its name \"{name}\" is not a plain name; left out"
        ));
        return;
    }
    let num = |ctx: &mut Ctx<'_>, k: &str, d: i64| {
        ctx.eval(&p.get(k), true, &where_)
            .trim()
            .parse::<i64>()
            .unwrap_or(d)
    };
    let start = num(ctx, "CounterConfig.start", 1);
    let incr = num(ctx, "CounterConfig.incr", 1);
    if !p.get("CounterConfig.end").trim().is_empty() {
        ctx.note(format!(
            "{where_}: its end (wrapping to the start) is not mapped; it counts on"
        ));
    }
    if !p.get("CounterConfig.format").trim().is_empty() {
        ctx.note(format!(
            "{where_}: its number format is not mapped; plain integers here"
        ));
    }
    let expr = if p.bool("CounterConfig.per_user") == Some(true) {
        format!("${{__iteration}} * {incr} + {}", start - incr)
    } else {
        ctx.note(format!(
            "{where_}: shared by all users: the fleet-wide counter here (unique and increasing per user, not consecutive)"
        ));
        "${__fleet_counter}".to_string()
    };
    scope.counters.push((where_, name.trim().to_string(), expr));
}

/// A Header Manager's headers, values as loadfleet templates.
fn headers_of(ctx: &mut Ctx<'_>, e: Node<'_, '_>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for h in Props::of(e).collection("HeaderManager.headers") {
        let hp = Props::of(h);
        let (n, v) = (hp.get("Header.name"), hp.get("Header.value"));
        let v = ctx.eval(&v, false, &label(e));
        if !n.trim().is_empty() {
            out.push((n.trim().to_string(), v));
        }
    }
    out
}

/// Adds `nearer` headers over `outer` ones: one of the same name (without
/// case) is replaced, as JMeter's nearer Header Manager wins.
fn merge_headers(outer: &mut Vec<(String, String)>, nearer: Vec<(String, String)>) {
    for (n, v) in nearer {
        match outer.iter_mut().find(|(o, _)| o.eq_ignore_ascii_case(&n)) {
            Some(slot) => slot.1 = v,
            None => outer.push((n, v)),
        }
    }
}

/// Walks a controller's children, `depth` blocks deep: configuration first
/// (it applies to the whole scope, wherever it sits in it), then samplers,
/// pauses and controllers in order. Returns the steps' text and how many
/// HTTP samplers it holds.
fn walk<'a, 'i>(
    ctx: &mut Ctx<'_>,
    items: Vec<(Node<'a, 'i>, Option<Node<'a, 'i>>)>,
    scope: &mut Scope,
    g: &Group,
    inherited: &[Node<'a, 'i>],
    depth: usize,
) -> Result<(String, usize), String> {
    let mut attached: Vec<Node<'a, 'i>> = inherited.to_vec();
    configure(ctx, &items, scope, &mut attached, Some(g.users))?;
    let mut out = String::new();
    let mut count = 0;
    for (e, children) in &items {
        let tag = e.tag_name().name();
        if !enabled(*e) {
            let n = samplers_in(*children) + usize::from(tag.starts_with("HTTPSampler"));
            // JMeter does not run it either.
            ctx.aside(format!(
                "{}: disabled in the JMX; left out{}",
                label(*e),
                if n > 0 {
                    format!(" (with the {n} HTTP sampler(s) in it)")
                } else {
                    String::new()
                }
            ));
            continue;
        }
        if is_config(tag) {
            continue;
        }
        match tag {
            "HTTPSamplerProxy" | "HTTPSampler" => {
                let (text, own_timers) = sampler(ctx, *e, *children, scope, &attached)?;
                for (w, t) in scope.timers.iter().chain(&own_timers) {
                    out.push_str(&pause(w, t, depth));
                }
                out.push_str(&nest(&text, depth));
                count += 1;
            }
            "TestAction" => {
                let p = Props::of(*e);
                let action = p.get("ActionProcessor.action");
                if !matches!(action.trim(), "1" | "") {
                    ctx.note(format!(
                        "{}: action {} (stop or restart): loadfleet's journeys do not stop or restart users from a step; left out",
                        label(*e),
                        action.trim()
                    ));
                    continue;
                }
                // A sampler: the timers in scope run before it, its own
                // timers too, then it pauses for its duration.
                let mut pauses: Vec<(String, String)> = scope.timers.clone();
                if let Some(c) = children {
                    for (x, _) in pairs(*c) {
                        if enabled(x)
                            && matches!(
                                x.tag_name().name(),
                                "ConstantTimer"
                                    | "UniformRandomTimer"
                                    | "GaussianRandomTimer"
                                    | "PoissonRandomTimer"
                            )
                            && let Some(t) = timer(ctx, x)
                        {
                            pauses.push((label(x), t));
                        }
                    }
                }
                let ms = ctx
                    .eval(&p.get("ActionProcessor.duration"), true, &label(*e))
                    .trim()
                    .parse::<f64>()
                    .unwrap_or(0.0);
                if ms > 0.0 {
                    pauses.push((label(*e), format!("{}ms", ms as u64)));
                }
                for (w, t) in &pauses {
                    out.push_str(&pause(w, t, depth));
                }
            }
            _ => {
                let (text, n) = controller(ctx, *e, *children, scope, g, &attached, depth)?;
                out.push_str(&text);
                count += n;
            }
        }
    }
    Ok((out, count))
}

/// A logic controller as a block of the journey (or its steps in place).
fn controller<'a, 'i>(
    ctx: &mut Ctx<'_>,
    e: Node<'a, 'i>,
    children: Option<Node<'a, 'i>>,
    scope: &Scope,
    g: &Group,
    attached: &[Node<'a, 'i>],
    depth: usize,
) -> Result<(String, usize), String> {
    let tag = e.tag_name().name();
    let where_ = label(e);
    // Each controller is an element inside its parent's hashTree: two XML
    // levels per controller, from the TestPlan's (whatever blocks it made).
    let nesting = e.ancestors().count() / 2;
    if depth >= MAX_DEPTH || nesting > MAX_DEPTH + 2 {
        return Err(format!(
            "{}: {where_} is nested more than {MAX_DEPTH} controllers deep; the import follows at most {MAX_DEPTH}",
            ctx.opts.source.display()
        ));
    }
    let kids = children.map(pairs).unwrap_or_default();
    let p = Props::of(e);
    let mut inner = scope.clone();
    // The steps inside, one block deeper (or in place).
    let mut body =
        |ctx: &mut Ctx<'_>, d: usize| walk(ctx, kids.clone(), &mut inner, g, attached, d);
    let wrapped = |ctx: &mut Ctx<'_>, keys: String, (text, n): (String, usize)| {
        if n == 0 {
            ctx.note(format!("{where_}: no HTTP sampler inside; left out"));
            return (String::new(), 0);
        }
        (block(&where_, &keys, depth) + &text, n)
    };
    Ok(match tag {
        "GenericController" | "RecordingController" => body(ctx, depth)?,
        "RandomOrderController" => {
            ctx.note(format!(
                "{where_}: its children run in their order here, not in a random order"
            ));
            body(ctx, depth)?
        }
        "TransactionController" => {
            let name = e.attribute("testname").unwrap_or("transaction").to_string();
            let mut keys = format!("group = {}", string(&name));
            if p.bool("TransactionController.includeTimers") == Some(true) {
                keys.push_str("\ninclude_think = true");
            }
            let b = body(ctx, depth + 1)?;
            wrapped(ctx, keys, b)
        }
        "LoopController" => {
            let v = p.get("LoopController.loops");
            let text = ctx.eval(&v, true, &where_);
            let forever = text.trim() == "-1"
                || p.bool("LoopController.continue_forever") == Some(true)
                    && text.trim().is_empty();
            match to_u64(&text) {
                _ if forever => match g.duration_s {
                    Some(d) => {
                        let b = body(ctx, depth + 1)?;
                        wrapped(ctx, format!("during = \"{d}s\""), b)
                    }
                    None => {
                        ctx.note(format!(
                            "{where_}: loops forever in a thread group without a duration; its steps run once per iteration here"
                        ));
                        body(ctx, depth)?
                    }
                },
                Some(0) => {
                    ctx.note(format!(
                        "{where_}: 0 loops, so JMeter never runs its {} sampler(s); left out",
                        samplers_in(children)
                    ));
                    (String::new(), 0)
                }
                Some(1) => body(ctx, depth)?,
                Some(n) if n <= loadfleet_controller_max_loops() => {
                    let b = body(ctx, depth + 1)?;
                    wrapped(ctx, format!("repeat = {n}"), b)
                }
                _ => {
                    ctx.note(format!(
                        "{where_}: loops \"{}\" is not a count loadfleet repeats (1 to {}); its steps run once here",
                        text.trim(),
                        loadfleet_controller_max_loops()
                    ));
                    body(ctx, depth)?
                }
            }
        }
        "OnceOnlyController" => {
            let b = body(ctx, depth + 1)?;
            wrapped(ctx, "once = true".into(), b)
        }
        "WhileController" => {
            let raw = p.get("WhileController.condition");
            match condition(ctx, &raw, &where_, true) {
                Ok(c) => {
                    ctx.note(format!(
                        "{where_}: JMeter's While has no bound; at most {WHILE_BOUND} passes here (`max_loops`; a pass refused by it is counted)"
                    ));
                    let b = body(ctx, depth + 1)?;
                    wrapped(
                        ctx,
                        format!("while = {}\nmax_loops = {WHILE_BOUND}", string_expr(&c)),
                        b,
                    )
                }
                Err(why) => {
                    ctx.note(format!(
                        "{where_}: condition {raw:?} not mapped ({why}); its {} sampler(s) run once per pass here",
                        samplers_in(children)
                    ));
                    body(ctx, depth)?
                }
            }
        }
        "IfController" => {
            let raw = p.get("IfController.condition");
            if p.bool("IfController.evaluateAll") == Some(true) {
                ctx.note(format!(
                    "{where_}: evaluateAll (the condition before each child): checked once, before the block, here"
                ));
            }
            match condition(ctx, &raw, &where_, false) {
                Ok(c) => {
                    let b = body(ctx, depth + 1)?;
                    wrapped(ctx, format!("if = {}", string_expr(&c)), b)
                }
                Err(why) => {
                    ctx.note(format!(
                        "{where_}: condition {raw:?} not mapped ({why}); its {} sampler(s) run every time here",
                        samplers_in(children)
                    ));
                    body(ctx, depth)?
                }
            }
        }
        "ForeachController" => {
            let input = p.get("ForeachController.inputVal");
            let output = p.get("ForeachController.returnVal");
            if !is_name(input.trim()) || !is_name(output.trim()) {
                ctx.note(format!(
                    "{where_}: input \"{input}\" or output \"{output}\" is not a plain name; its steps run once here"
                ));
                body(ctx, depth)?
            } else {
                let list = ctx
                    .csv_vars
                    .get(input.trim())
                    .cloned()
                    .unwrap_or_else(|| input.trim().to_string());
                let b = body(ctx, depth + 1)?;
                wrapped(
                    ctx,
                    format!(
                        "for_each = {}\nas = {}",
                        string(&list),
                        string(output.trim())
                    ),
                    b,
                )
            }
        }
        "RunTime" => {
            let secs = to_u64(&ctx.eval(&p.get("RunTime.seconds"), true, &where_)).unwrap_or(0);
            if secs == 0 {
                ctx.note(format!(
                    "{where_}: 0 seconds, so JMeter never runs its samplers; left out"
                ));
                (String::new(), 0)
            } else {
                let b = body(ctx, depth + 1)?;
                wrapped(ctx, format!("during = \"{secs}s\""), b)
            }
        }
        "ThroughputController" => {
            let style = p.get("ThroughputController.style");
            let per_thread = p.bool("ThroughputController.perThread") == Some(true);
            if style.trim() == "1" {
                let pct = ctx
                    .eval(
                        &p.get("ThroughputController.percentThroughput"),
                        true,
                        &where_,
                    )
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| (0.0..=100.0).contains(v));
                match pct {
                    Some(pc) => {
                        if !per_thread {
                            ctx.note(format!(
                                "{where_}: {pc}% of every user's passes here (JMeter counts the thread group's passes together)"
                            ));
                        }
                        let b = body(ctx, depth + 1)?;
                        wrapped(ctx, format!("percent = {pc}"), b)
                    }
                    None => {
                        ctx.note(format!(
                            "{where_}: its percent is not a number from 0 to 100; its steps run every time here"
                        ));
                        body(ctx, depth)?
                    }
                }
            } else {
                let max =
                    to_u64(&ctx.eval(&p.get("ThroughputController.maxThroughput"), true, &where_));
                if max == Some(1) && per_thread {
                    let b = body(ctx, depth + 1)?;
                    wrapped(ctx, "once = true".into(), b)
                } else {
                    ctx.note(format!(
                        "{where_}: total executions ({}{}): not mapped; its {} sampler(s) run every time here",
                        max.map_or("?".to_string(), |m| m.to_string()),
                        if per_thread { " per user" } else { " in all" },
                        samplers_in(children)
                    ));
                    body(ctx, depth)?
                }
            }
        }
        "RandomController" | "InterleaveControl" => {
            let key = if tag == "RandomController" {
                "one_of = true"
            } else {
                "in_turn = true"
            };
            let mut attached = attached.to_vec();
            configure(ctx, &kids, &mut inner, &mut attached, Some(g.users))?;
            let mut text = String::new();
            let mut n = 0;
            let top = format!("\n[[scenario{}]]\n", ".step".repeat(depth + 2));
            for kid in kids.iter().filter(|(k, _)| !is_config(k.tag_name().name())) {
                let mut branch_scope = inner.clone();
                let (t, c) = walk(ctx, vec![*kid], &mut branch_scope, g, &attached, depth + 1)?;
                if c == 0 {
                    continue;
                }
                if t.matches(&top).count() == 1 {
                    // One step (a sampler or a block): the branch itself.
                    text.push_str(&t);
                } else {
                    // Several (a sampler and its pauses): one pass of them.
                    text.push_str(&block(
                        &format!("{} (one branch)", label(kid.0)),
                        "repeat = 1",
                        depth + 1,
                    ));
                    text.push_str(&nest(&t, 1));
                }
                n += c;
            }
            wrapped(ctx, key.into(), (text, n))
        }
        "SwitchController" => {
            let value = ctx.eval(&p.get("SwitchController.value"), false, &where_);
            let value = value.trim().to_string();
            let mut attached = attached.to_vec();
            configure(ctx, &kids, &mut inner, &mut attached, Some(g.users))?;
            let branches: Vec<_> = kids
                .iter()
                .filter(|(k, _)| !is_config(k.tag_name().name()) && enabled(*k))
                .copied()
                .collect();
            if let Ok(i) = value.parse::<usize>() {
                // A fixed choice: that child only (JMeter runs the first
                // when the number is out of range).
                let pick = branches.get(i).or(branches.first()).copied();
                let chosen: Vec<_> = pick.into_iter().collect();
                walk(ctx, chosen, &mut inner, g, &attached, depth)?
            } else {
                ctx.note(format!(
                    "{where_}: each child under a condition on \"{value}\" (its index or name); JMeter's default child is not mapped"
                ));
                let mut text = String::new();
                let mut n = 0;
                for (i, kid) in branches.iter().enumerate() {
                    let name = kid.0.attribute("testname").unwrap_or("");
                    let cond = format!(
                        "{} == \"{i}\" or {} == {}",
                        value,
                        value,
                        toml::Value::String(name.to_string())
                    );
                    let mut branch_scope = inner.clone();
                    let (t, c) = walk(ctx, vec![*kid], &mut branch_scope, g, &attached, depth + 1)?;
                    if c == 0 {
                        continue;
                    }
                    if loadfleet_agent::expr::Expr::condition(
                        &cond,
                        &mut loadfleet_agent::template::VarTable::default(),
                    )
                    .is_err()
                    {
                        ctx.note(format!(
                            "{where_}: value \"{value}\" is not one variable; its children run every time here"
                        ));
                        text.push_str(&nest(&t, depth.saturating_sub(0)));
                    } else {
                        text.push_str(&block(
                            &format!("{} (switch case {i})", label(kid.0)),
                            &format!("if = {}", string_expr(&cond)),
                            depth,
                        ));
                        text.push_str(&t);
                    }
                    n += c;
                }
                (text, n)
            }
        }
        _ => {
            note_unmapped(ctx, e);
            let n = samplers_in(children);
            if n > 0 {
                ctx.note(format!(
                    "{where_}: the {n} HTTP sampler(s) inside it are left out with it"
                ));
            }
            (String::new(), 0)
        }
    })
}

/// Passes a `while` imported from JMeter may make (its While has none).
const WHILE_BOUND: u64 = 1_000;

fn loadfleet_controller_max_loops() -> u64 {
    1_000_000
}

/// An expression as a TOML string, its variables kept.
fn string_expr(e: &str) -> String {
    template_string(e)
}

/// A JMeter condition (If, While) as a loadfleet one: the function
/// wrappers (`__jexl3`, `__jexl2`, `__groovy`, `__javaScript`) taken off,
/// quoted variables unquoted, `===` as `==`, `"${a}".equals("x")` as
/// `${a} == "x"`, a lone `${flag}` as `${flag} == "true"`. `Err` says why
/// a condition does not map.
fn condition(
    ctx: &mut Ctx<'_>,
    raw: &str,
    where_: &str,
    blank_is_last_ok: bool,
) -> Result<String, String> {
    let t = raw.trim();
    if t.is_empty() {
        return if blank_is_last_ok {
            // JMeter: go on while the last sample succeeded.
            Ok("status == 0 or status < 400".into())
        } else {
            Err("empty".into())
        };
    }
    let mut inner = t.to_string();
    for f in [
        "__jexl3(",
        "__jexl2(",
        "__groovy(",
        "__javaScript(",
        "__javascript(",
    ] {
        if let Some(rest) = t.strip_prefix("${").and_then(|r| r.strip_prefix(f))
            && let Some(body) = rest.strip_suffix(")}")
        {
            inner = body.trim().trim_end_matches(',').trim().to_string();
        }
    }
    let lone = regex::Regex::new(r"^\$\{([A-Za-z0-9_.-]+)\}$").expect("regex");
    if lone.is_match(inner.trim()) {
        inner = format!("{} == \"true\"", inner.trim());
    }
    let quoted = regex::Regex::new(r#"["'](\$\{[A-Za-z0-9_.-]+\})["']"#).expect("regex");
    let equals =
        regex::Regex::new(r#"(\$\{[A-Za-z0-9_.-]+\})\.equals\((["'][^"']*["'])\)"#).expect("regex");
    inner = inner.replace("===", "==").replace("!==", "!=");
    inner = quoted.replace_all(&inner, "$1").into_owned();
    inner = equals.replace_all(&inner, "$1 == $2").into_owned();
    if inner.contains("${__") {
        return Err("it calls a JMeter function".into());
    }
    let converted = ctx.eval(&inner, false, where_);
    loadfleet_agent::expr::Expr::condition(
        &converted,
        &mut loadfleet_agent::template::VarTable::default(),
    )
    .map_err(|e| e.message)?;
    Ok(converted)
}

/// A timer as a think time.
fn timer(ctx: &mut Ctx<'_>, e: Node<'_, '_>) -> Option<String> {
    let p = Props::of(e);
    let mut ms = |k: &str| -> Option<f64> {
        let v = p.get(k);
        ctx.eval(&v, true, &label(e)).trim().parse::<f64>().ok()
    };
    let think = match e.tag_name().name() {
        "ConstantTimer" => ms("ConstantTimer.delay").map(|d| format!("{}ms", d as u64)),
        "UniformRandomTimer" => {
            // Delay plus a random part up to `range`.
            let (d, r) = (
                ms("ConstantTimer.delay")?,
                ms("RandomTimer.range").unwrap_or(0.0),
            );
            Some(format!("uniform({}ms, {}ms)", d as u64, (d + r) as u64))
        }
        "PoissonRandomTimer" => {
            // Delay plus a Poisson-distributed part of mean `range`: the
            // same mean, spread uniformly.
            let (d, lambda) = (
                ms("ConstantTimer.delay")?,
                ms("RandomTimer.range").unwrap_or(0.0),
            );
            ctx.note(format!(
                "{}: a Poisson pause of mean {} ms is a uniform one of the same mean here",
                label(e),
                (d + lambda) as u64
            ));
            Some(format!(
                "uniform({}ms, {}ms)",
                d as u64,
                (d + 2.0 * lambda) as u64
            ))
        }
        "GaussianRandomTimer" => {
            let (d, dev) = (
                ms("ConstantTimer.delay")?,
                ms("RandomTimer.range").unwrap_or(0.0),
            );
            Some(format!("gaussian({}ms, {}ms)", d as u64, dev as u64))
        }
        _ => None,
    };
    if think.is_none() {
        ctx.note(format!("{}: its delay is not a number; left out", label(e)));
    }
    think
}

/// A CSV Data Set as a `[[data]]` table.
fn csv(ctx: &mut Ctx<'_>, e: Node<'_, '_>) -> Result<(), String> {
    let p = Props::of(e);
    let where_ = label(e);
    let file = {
        let v = p.get("filename");
        ctx.eval(&v, true, &where_)
    };
    let columns: Vec<String> = p
        .get("variableNames")
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let delimiter = p.get("delimiter");
    if !delimiter.is_empty() && delimiter != "," {
        ctx.note(format!(
            "{where_} delimiter \"{delimiter}\": loadfleet reads comma-separated files; convert the file"
        ));
    }
    if let Some((_, _, name)) = ctx
        .csv_files
        .iter()
        .find(|(f, c, _)| *f == file && *c == columns)
    {
        let name = name.clone();
        for c in &columns {
            ctx.csv_vars.insert(c.clone(), format!("{name}.{c}"));
        }
        return Ok(());
    }
    let name = if ctx.data.is_empty() {
        "users".to_string()
    } else {
        format!("data{}", ctx.data.len() + 1)
    };
    ctx.csv_files
        .push((file.clone(), columns.clone(), name.clone()));
    let written = path_for_plan(ctx, &file, &where_);
    let ignore_first = p.bool("ignoreFirstLine") == Some(true);
    let recycle = p.bool("recycle") != Some(false);
    let share = p.get("shareMode");
    let mode = if recycle { "sequential" } else { "unique" };
    if !share.is_empty() && !share.contains("all") && !share.contains("All") {
        ctx.note(format!(
            "{where_} shareMode \"{share}\": loadfleet shares rows across all users (mode \"{mode}\")"
        ));
    }
    for c in &columns {
        ctx.csv_vars.insert(c.clone(), format!("{name}.{c}"));
    }
    let mut t = format!(
        "\n# From {where_} (shareMode all threads, recycle {recycle} → mode \"{mode}\").\n[[data]]\nname = {}\nfile = {}\nmode = \"{mode}\"\n",
        string(&name),
        string(&written)
    );
    if !columns.is_empty() && !ignore_first {
        // JMeter's variableNames: the file has no header row.
        let cols: Vec<String> = columns.iter().map(|c| string(c)).collect();
        let _ = writeln!(t, "columns = [{}]", cols.join(", "));
    } else if columns.is_empty() {
        ctx.note(format!(
            "{where_}: no variableNames; the file's first line names the columns"
        ));
    }
    ctx.data.push(t);
    Ok(())
}

/// A file a JMX names (relative paths are the JMX's directory's, as JMeter
/// reads them) as the written plan names it: relative to the plan's
/// directory when it is under it. A file that does not exist is said.
fn path_for_plan(ctx: &mut Ctx<'_>, file: &str, where_: &str) -> String {
    let jmx_dir = ctx.opts.source.parent().unwrap_or(Path::new("."));
    let path = if Path::new(file).is_absolute() {
        PathBuf::from(file)
    } else {
        jmx_dir.join(file)
    };
    // A bare `--out plan.toml` has the empty path as its parent: the
    // current directory.
    let out_dir = ctx
        .opts
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match (path.canonicalize(), out_dir.canonicalize()) {
        (Ok(abs), Ok(out)) => abs
            .strip_prefix(&out)
            .map(|r| r.display().to_string())
            .unwrap_or_else(|_| abs.display().to_string()),
        _ => {
            ctx.note(format!(
                "{where_}: {} does not exist here; the plan names it, put it there",
                path.display()
            ));
            path.display().to_string()
        }
    }
}

#[allow(clippy::too_many_arguments)]
/// One HTTP sampler as a step (`[[scenario.step]]` at the top level, for
/// [`nest`]), and its own timers (pauses before it).
#[allow(clippy::type_complexity)]
fn sampler<'a, 'i>(
    ctx: &mut Ctx<'_>,
    e: Node<'a, 'i>,
    children: Option<Node<'a, 'i>>,
    scope: &Scope,
    inherited: &[Node<'a, 'i>],
) -> Result<(String, Vec<(String, String)>), String> {
    let p = Props::of(e);
    let name = e.attribute("testname").unwrap_or("request").to_string();
    let where_ = label(e);
    let mut get = |k: &str, vars: bool| {
        let v = p.get(k);
        ctx.eval(&v, vars, &where_)
    };
    let domain = Some(get("HTTPSampler.domain", true)).filter(|d| !d.is_empty());
    let port = Some(get("HTTPSampler.port", true)).filter(|d| !d.is_empty());
    let protocol = Some(get("HTTPSampler.protocol", true)).filter(|d| !d.is_empty());
    let path = get("HTTPSampler.path", true);
    let method = {
        let m = get("HTTPSampler.method", true);
        if m.is_empty() {
            "GET".to_string()
        } else {
            m.to_ascii_uppercase()
        }
    };
    let follow = p.bool("HTTPSampler.follow_redirects") == Some(true)
        || p.bool("HTTPSampler.auto_redirects") == Some(true);
    let raw_body = p.bool("HTTPSampler.postBodyRaw") == Some(true);
    // File uploads: (parameter name, path as the plan names it, media type).
    let mut files: Vec<(String, String, String)> = Vec::new();
    for f in p
        .element("HTTPsampler.Files")
        .map(|f| f.collection("HTTPFileArgs.files"))
        .unwrap_or_default()
    {
        let f = Props::of(f);
        let file = ctx.eval(&f.get("File.path"), true, &where_);
        if file.trim().is_empty() {
            continue;
        }
        let param = ctx.eval(&f.get("File.paramname"), false, &where_);
        let mime = ctx.eval(&f.get("File.mimetype"), true, &where_);
        let written = path_for_plan(ctx, file.trim(), &where_);
        files.push((param, written, mime));
    }
    // JMeter sends a form with files as multipart/form-data, and one when
    // told to; a lone file without a parameter name is the body itself.
    let multipart = !matches!(method.as_str(), "GET" | "HEAD" | "DELETE" | "OPTIONS")
        && (p.bool("HTTPSampler.DO_MULTIPART_POST") == Some(true)
            || files.iter().any(|(param, _, _)| !param.is_empty()));
    if !multipart && !files.is_empty() {
        ctx.note(format!(
            "{where_}: its file sent as the request body ({}) is not sent: a step's raw body is text; a file goes as a `multipart` part",
            files[0].1
        ));
    }
    let mut args: Vec<(String, String)> = p
        .element("HTTPsampler.Arguments")
        .map(|a| sampler_arguments(&a, !raw_body && !multipart))
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let v = ctx.eval(&v, false, &where_);
            (k, v)
        })
        .collect();
    // The defaults' parameters go with every sampler's own (not to a raw
    // body, which has no names).
    let raw = p.bool("HTTPSampler.postBodyRaw") == Some(true);
    if !raw {
        args.extend(scope.params.iter().cloned());
    }
    // A name sent more than once is written as a list of pairs, in order.
    let repeats = args
        .iter()
        .enumerate()
        .any(|(i, (k, _))| args[..i].iter().any(|(e, _)| e == k));
    let origin_of = |d: &str, port: &str, proto: &str| {
        let proto = if proto.is_empty() { "http" } else { proto };
        let default_port = (proto == "http" && port == "80") || (proto == "https" && port == "443");
        if port.is_empty() || default_port {
            format!("{proto}://{d}")
        } else {
            format!("{proto}://{d}:{port}")
        }
    };
    let scope_origin =
        (!scope.domain.is_empty()).then(|| origin_of(&scope.domain, &scope.port, &scope.protocol));
    let own_origin = domain.as_ref().map(|d| {
        origin_of(
            d,
            port.as_deref().unwrap_or(&scope.port),
            protocol.as_deref().unwrap_or(&scope.protocol),
        )
    });
    if ctx.base.is_none() {
        ctx.base = scope_origin.clone().or_else(|| own_origin.clone());
    }
    let base = ctx.base.clone();
    // The path: the sampler's, else the defaults' (Moodle's front page is
    // a sampler with an empty path).
    let mut path = if path.is_empty() {
        ctx.eval(&scope.path, false, &where_)
    } else if path.starts_with("http://") || path.starts_with("https://") {
        path
    } else if !path.starts_with('/') && !scope.path.is_empty() && !path.starts_with("${") {
        format!("{}/{path}", scope.path.trim_end_matches('/'))
    } else {
        path
    };
    if path.is_empty() {
        path = "/".into();
    } else if !path.starts_with('/') && !path.starts_with("http") && !path.starts_with("${") {
        path = format!("/{path}");
    }
    let mut lines = String::new();
    let _ = writeln!(lines, "\n# From {where_}.\n[[scenario.step]]");
    let _ = writeln!(lines, "name = {}", string(&name));
    // A GET with a body keeps its method (a plan reads a body as a POST
    // unless the step names its method).
    if method != "GET" || (raw_body && !args.is_empty()) {
        let _ = writeln!(lines, "method = {}", string(&method));
    }
    let other_origin = own_origin
        .as_ref()
        .filter(|o| Some(*o) != base.as_ref() && Some(*o) != scope_origin.as_ref());
    // `${…}` in a path is a variable set at run time: kept as one.
    if path.starts_with("http://") || path.starts_with("https://") {
        let _ = writeln!(lines, "url = {}", template_string(&path));
    } else if let Some(o) = other_origin {
        let _ = writeln!(lines, "url = {}", template_string(&format!("{o}{path}")));
    } else {
        let _ = writeln!(lines, "path = {}", template_string(&path));
    }
    if !follow {
        let _ = writeln!(lines, "follow_redirects = false");
    }
    let with_body = !matches!(method.as_str(), "GET" | "HEAD" | "DELETE" | "OPTIONS");
    if multipart {
        let _ = writeln!(lines, "multipart = [");
        for (k, v) in &args {
            let _ = writeln!(
                lines,
                "  {{ name = {}, value = {} }},",
                template_string(k),
                template_string(v)
            );
        }
        for (param, file, mime) in files.iter().filter(|(p, _, _)| !p.is_empty()) {
            let kind = if mime.trim().is_empty() {
                String::new()
            } else {
                format!(", content_type = {}", string(mime.trim()))
            };
            let _ = writeln!(
                lines,
                "  {{ name = {}, file = {}{kind} }},",
                template_string(param),
                string(file)
            );
        }
        let _ = writeln!(lines, "]");
    } else if !args.is_empty() {
        if raw_body {
            let body: String = args.iter().map(|(_, v)| v.as_str()).collect();
            let _ = writeln!(lines, "body = {}", template_string(&body));
        } else {
            let key = if with_body { "form" } else { "query" };
            let value = if repeats {
                template_pairs(&args)
            } else {
                template_table(&args)
            };
            let _ = writeln!(lines, "{key} = {value}");
        }
    }
    // The sampler's own Header Managers win over its scope's, per name.
    let mut all_headers = scope.headers.clone();
    let mut own_timers = Vec::new();
    if let Some(c) = children {
        for (x, _) in pairs(c) {
            if enabled(x) && x.tag_name().name() == "HeaderManager" {
                let own = headers_of(ctx, x);
                merge_headers(&mut all_headers, own);
            }
        }
    }
    if !all_headers.is_empty() {
        let headers: Vec<(String, String)> = all_headers
            .iter()
            .filter(|(n, _)| {
                !["content-length", "transfer-encoding", "cookie", "host"]
                    .iter()
                    .any(|s| n.eq_ignore_ascii_case(s))
            })
            .cloned()
            .collect();
        if !headers.is_empty() {
            let _ = writeln!(lines, "headers = {}", template_table(&headers));
        }
    }
    // Post-processors and assertions: the sampler's own, then those of its
    // scope, in JMeter's order (extractors before assertions).
    let mut own: Vec<Node<'a, 'i>> = Vec::new();
    if let Some(c) = children {
        for (x, _) in pairs(c) {
            if !enabled(x) {
                ctx.aside(format!("{}: disabled in the JMX; left out", label(x)));
                continue;
            }
            match x.tag_name().name() {
                "RegexExtractor" | "ResponseAssertion" | "JSONPostProcessor" | "HtmlExtractor"
                | "BoundaryExtractor" | "XPathExtractor" | "XPath2Extractor" => own.push(x),
                "ConstantTimer"
                | "UniformRandomTimer"
                | "GaussianRandomTimer"
                | "PoissonRandomTimer" => {
                    if let Some(t) = timer(ctx, x) {
                        own_timers.push((label(x), t));
                    }
                }
                "HeaderManager" => {}
                _ => note_unmapped(ctx, x),
            }
        }
    }
    let mut att = Attached {
        lines: String::new(),
        status: Vec::new(),
        contains: Vec::new(),
        matches: Vec::new(),
        not_matches: Vec::new(),
        headers: Vec::new(),
        headers_not: Vec::new(),
    };
    for x in own.iter().chain(inherited.iter()) {
        match x.tag_name().name() {
            "RegexExtractor" => extractor(ctx, *x, &mut att),
            "JSONPostProcessor" | "HtmlExtractor" | "BoundaryExtractor" | "XPathExtractor"
            | "XPath2Extractor" => other_extractor(ctx, *x, &mut att),
            "ResponseAssertion" => assertion(ctx, *x, &mut att),
            _ => {}
        }
    }
    let mut check = Vec::new();
    if !att.status.is_empty() {
        check.push(format!("status = [{}]", att.status.join(", ")));
    }
    if !att.contains.is_empty() {
        check.push(format!("body_contains = [{}]", att.contains.join(", ")));
    }
    for (key, list) in [
        ("body_matches", &att.matches),
        ("body_not_matches", &att.not_matches),
        ("headers_match", &att.headers),
        ("headers_not_match", &att.headers_not),
    ] {
        if !list.is_empty() {
            check.push(format!("{key} = [{}]", list.join(", ")));
        }
    }
    if !check.is_empty() {
        let _ = writeln!(lines, "check = {{ {} }}", check.join(", "));
    }
    lines.push_str(&att.lines);
    Ok((lines, own_timers))
}

/// A string whose `${…}` are loadfleet variables (not escaped).
fn template_string(s: &str) -> String {
    string(s).replace("$${", "${")
}

/// `[["name", "value"], …]`: pairs in order, a name as often as it comes.
fn template_pairs(pairs: &[(String, String)]) -> String {
    let items: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("[{}, {}]", template_string(k), template_string(v)))
        .collect();
    format!("[{}]", items.join(", "))
}

fn template_table(pairs: &[(String, String)]) -> String {
    inline_table(pairs).replace("$${", "${")
}

fn extractor(ctx: &mut Ctx<'_>, e: Node<'_, '_>, att: &mut Attached) {
    let p = Props::of(e);
    let where_ = label(e);
    let refname = p.get("RegexExtractor.refname");
    let regex = p.get("RegexExtractor.regex");
    let template = p.get("RegexExtractor.template");
    let match_no = p.get("RegexExtractor.match_number");
    let default = p.get("RegexExtractor.default");
    let use_headers = p.get("RegexExtractor.useHeaders");
    if !is_name(&refname) {
        ctx.note(format!(
            "{where_}: refname \"{refname}\" is not a plain name; left out"
        ));
        return;
    }
    if !matches!(use_headers.trim(), "" | "false" | "body") {
        ctx.note(format!(
            "{where_} field \"{use_headers}\": loadfleet's regex extraction reads the body; left out"
        ));
        return;
    }
    let group = template
        .trim()
        .strip_prefix('$')
        .and_then(|t| t.strip_suffix('$'))
        .and_then(|n| n.parse::<u32>().ok());
    let Some(group) = group else {
        ctx.note(format!(
            "{where_} template \"{template}\": only one group ($N$) maps; left out"
        ));
        return;
    };
    if let Err(err) = regex::bytes::Regex::new(&regex) {
        ctx.note(format!(
            "{where_}: its regex does not compile here ({}); left out",
            err.to_string().lines().last().unwrap_or("")
        ));
        return;
    }
    let match_no: i64 = match_no.trim().parse().unwrap_or(1);
    let _ = writeln!(
        att.lines,
        "\n# From {where_}.\n[[scenario.step.extract]]\nname = {}\nregex = {}\ngroup = {group}",
        string(&refname),
        literal(&regex)
    );
    if match_no < 0 {
        // Every match: the list a ForEach walks, and `<refname>_matchNr`.
        let _ = writeln!(att.lines, "match = \"all\"");
    } else if match_no != 1 {
        let _ = writeln!(att.lines, "match = {match_no}");
    }
    if match_no < 0 {
        // No match is an empty list, not a failure.
    } else if !default.is_empty() {
        let _ = writeln!(att.lines, "default = {}", string(&default));
    } else {
        ctx.note(format!(
            "{where_}: no default; JMeter would go on with an empty `{refname}`, loadfleet counts the step as failed (an `extract` error) when nothing matches"
        ));
    }
}

/// A JSONPath of the plain shape (`$.a.b[0]`, `$['a']`) as a JSON pointer.
fn json_pointer(path: &str) -> Option<String> {
    let rest = path.trim().strip_prefix('$')?;
    let mut out = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                if chars.peek() == Some(&'.') {
                    return None; // `..`: a search, not a path
                }
                let mut key = String::new();
                while let Some(&n) = chars.peek() {
                    if n == '.' || n == '[' {
                        break;
                    }
                    key.push(n);
                    chars.next();
                }
                if key.is_empty() || key == "*" {
                    return None;
                }
                out.push('/');
                out.push_str(&key.replace('~', "~0").replace('/', "~1"));
            }
            '[' => {
                let mut inner = String::new();
                for n in chars.by_ref() {
                    if n == ']' {
                        break;
                    }
                    inner.push(n);
                }
                let key = inner.trim().trim_matches(|q| q == '\'' || q == '"');
                if key.is_empty() || key == "*" || inner.contains('?') || inner.contains(':') {
                    return None;
                }
                out.push('/');
                out.push_str(&key.replace('~', "~0").replace('/', "~1"));
            }
            _ => return None,
        }
    }
    Some(out)
}

/// An XPath of the shapes plans use to read an HTML or XML page, as a CSS
/// selector and the attribute to read (`None`: the element's text):
/// `//form[@id='login']//input[@name="token"]/@value` is
/// `form[id="login"] input[name="token"]` and `value`. Steps are `//`
/// (any depth) or `/` (a child), each an element name or `*` with any
/// number of `[@attr='v']`, `[@attr]`, `[contains(@attr,'v')]` or
/// `[starts-with(@attr,'v')]` tests; the last may be `@attr` or `text()`.
/// Anything else (positions, axes, functions of text) is `None`.
fn xpath_to_css(xpath: &str) -> Option<(String, Option<String>)> {
    let x = xpath.trim();
    if !x.starts_with('/') {
        return None;
    }
    let mut css = String::new();
    let mut attribute = None;
    let mut rest = x;
    let mut first = true;
    while !rest.is_empty() {
        let (descendant, after) = if let Some(r) = rest.strip_prefix("//") {
            (true, r)
        } else if let Some(r) = rest.strip_prefix('/') {
            (false, r)
        } else {
            return None;
        };
        // The step: up to the next `/` outside brackets and quotes.
        let (mut depth, mut quote) = (0i32, None::<char>);
        let mut end = after.len();
        for (i, c) in after.char_indices() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '\'' | '"') => quote = Some(c),
                (None, '[') => depth += 1,
                (None, ']') => depth -= 1,
                (None, '/') if depth == 0 => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let step = &after[..end];
        rest = &after[end..];
        if step.is_empty() {
            return None;
        }
        if let Some(a) = step.strip_prefix('@') {
            // The attribute to read: the last step only.
            if !rest.is_empty() || !is_xml_name(a) || css.is_empty() {
                return None;
            }
            attribute = Some(a.to_string());
            break;
        }
        if step == "text()" {
            if !rest.is_empty() || css.is_empty() {
                return None;
            }
            break;
        }
        let (name, mut tests) = match step.find('[') {
            Some(i) => (&step[..i], &step[i..]),
            None => (step, ""),
        };
        if name != "*" && !is_xml_name(name) {
            return None;
        }
        if !first {
            css.push_str(if descendant { " " } else { " > " });
        } else if !descendant {
            // `/html/...`: from the document's root element.
            css.push_str(":root");
            if name != "html" && name != "*" {
                return None;
            }
            first = false;
            while let Some(t) = tests.strip_prefix('[') {
                let close = t.find(']')?;
                css.push_str(&xpath_test(&t[..close])?);
                tests = &t[close + 1..];
            }
            if !tests.is_empty() {
                return None;
            }
            continue;
        }
        first = false;
        css.push_str(name);
        while let Some(t) = tests.strip_prefix('[') {
            let close = t.find(']')?;
            css.push_str(&xpath_test(&t[..close])?);
            tests = &t[close + 1..];
        }
        if !tests.is_empty() {
            return None;
        }
    }
    (!css.is_empty()).then_some((css, attribute))
}

/// One XPath predicate as a CSS attribute selector.
fn xpath_test(t: &str) -> Option<String> {
    let t = t.trim();
    let quoted = |v: &str| -> Option<String> {
        let v = v.trim();
        let inner = v
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .or_else(|| v.strip_prefix('"').and_then(|v| v.strip_suffix('"')))?;
        (!inner.contains('"') && !inner.contains('\\')).then(|| inner.to_string())
    };
    for (func, op) in [("contains(", "*="), ("starts-with(", "^=")] {
        if let Some(args) = t.strip_prefix(func).and_then(|a| a.strip_suffix(')')) {
            let (attr, value) = args.split_once(',')?;
            let attr = attr.trim().strip_prefix('@')?;
            if !is_xml_name(attr) {
                return None;
            }
            return Some(format!("[{attr}{op}\"{}\"]", quoted(value)?));
        }
    }
    let attr = t.strip_prefix('@')?;
    match attr.split_once('=') {
        Some((a, v)) if is_xml_name(a.trim()) => Some(format!("[{}=\"{}\"]", a.trim(), quoted(v)?)),
        Some(_) => None,
        None if is_xml_name(attr) => Some(format!("[{attr}]")),
        None => None,
    }
}

fn is_xml_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit() || c == '-')
}

/// JSON, CSS/jQuery and Boundary Extractors as extractions.
fn other_extractor(ctx: &mut Ctx<'_>, e: Node<'_, '_>, att: &mut Attached) {
    let p = Props::of(e);
    let where_ = label(e);
    // (name, source line, match number, default)
    let mut found: Vec<(String, String, String, String)> = Vec::new();
    match e.tag_name().name() {
        "JSONPostProcessor" => {
            let split = |k: &str| -> Vec<String> {
                p.get(k).split(';').map(|x| x.trim().to_string()).collect()
            };
            let (names, paths, matches, defaults) = (
                split("JSONPostProcessor.referenceNames"),
                split("JSONPostProcessor.jsonPathExprs"),
                split("JSONPostProcessor.match_numbers"),
                split("JSONPostProcessor.defaultValues"),
            );
            for (i, name) in names.iter().enumerate() {
                let path = paths.get(i).cloned().unwrap_or_default();
                match json_pointer(&path) {
                    Some(ptr) => found.push((
                        name.clone(),
                        format!("json = {}", string(&ptr)),
                        // JMeter: empty is 0, a random match.
                        matches.get(i).filter(|m| !m.is_empty()).cloned().unwrap_or("0".into()),
                        defaults.get(i).cloned().unwrap_or_default(),
                    )),
                    None => ctx.note(format!(
                        "{where_} `{name}`: JSONPath {path:?} is not a plain path (a search, a wildcard or a filter); left out"
                    )),
                }
            }
        }
        tag @ ("XPathExtractor" | "XPath2Extractor") => {
            let key = if tag == "XPathExtractor" {
                "XPathExtractor"
            } else {
                "XPathExtractor2"
            };
            let query = p.get(&format!("{key}.xpathQuery"));
            match xpath_to_css(&query) {
                Some((css, attr)) => {
                    let mut line = format!("css = {}", literal(&css));
                    if let Some(a) = attr {
                        let _ = write!(line, "\nattribute = {}", string(&a));
                    }
                    // An empty match number reads the first match.
                    let n = p.get(&format!("{key}.matchNumber"));
                    found.push((
                        p.get(&format!("{key}.refname")),
                        line,
                        if n.trim().is_empty() { "1".into() } else { n },
                        p.get(&format!("{key}.default")),
                    ));
                }
                None => ctx.note(format!(
                    "{where_}: XPath {query:?} is not a path of elements, attribute tests and a final @attribute or text() (the shapes read here as a CSS selector); left out"
                )),
            }
        }
        "HtmlExtractor" => {
            let attr = p.get("HtmlExtractor.attribute");
            let mut line = format!("css = {}", literal(&p.get("HtmlExtractor.expr")));
            if !attr.trim().is_empty() {
                let _ = write!(line, "\nattribute = {}", string(attr.trim()));
            }
            found.push((
                p.get("HtmlExtractor.refname"),
                line,
                p.get("HtmlExtractor.match_number"),
                p.get("HtmlExtractor.default"),
            ));
        }
        _ => {
            let use_headers = p.get("BoundaryExtractor.useHeaders");
            if !matches!(use_headers.trim(), "" | "false" | "body") {
                ctx.note(format!(
                    "{where_} field \"{use_headers}\": the boundaries are matched in the body here"
                ));
            }
            let re = format!(
                "(?s){}(.*?){}",
                regex::escape(&p.get("BoundaryExtractor.lboundary")),
                regex::escape(&p.get("BoundaryExtractor.rboundary"))
            );
            found.push((
                p.get("BoundaryExtractor.refname"),
                format!("regex = {}\ngroup = 1", literal(&re)),
                p.get("BoundaryExtractor.match_number"),
                p.get("BoundaryExtractor.default"),
            ));
        }
    }
    for (name, source, match_no, default) in found {
        if !is_name(name.trim()) {
            ctx.note(format!(
                "{where_}: name \"{name}\" is not a plain name; left out"
            ));
            continue;
        }
        let n: i64 = match_no.trim().parse().unwrap_or(1);
        let _ = writeln!(
            att.lines,
            "\n# From {where_}.\n[[scenario.step.extract]]\nname = {}\n{source}",
            string(name.trim())
        );
        let json = source.starts_with("json");
        if n < 0 {
            let _ = writeln!(att.lines, "match = \"all\"");
        } else if n != 1 && !json {
            let _ = writeln!(att.lines, "match = {n}");
        }
        if n >= 0 {
            // JMeter sets the default when nothing matches; empty is a value too.
            let _ = writeln!(att.lines, "default = {}", string(&default));
        }
    }
}

/// A TOML literal string for a regular expression (no escapes to double),
/// or a basic one when it holds a `'`.
fn literal(s: &str) -> String {
    if !s.contains('\'') && !s.contains('\n') {
        format!("'{s}'")
    } else {
        string(s)
    }
}

fn assertion(ctx: &mut Ctx<'_>, e: Node<'_, '_>, att: &mut Attached) {
    let p = Props::of(e);
    let where_ = label(e);
    let field = p.get("Assertion.test_field");
    let kind: u32 = p.get("Assertion.test_type").trim().parse().unwrap_or(2);
    // JMeter spells the collection "Asserion.test_strings".
    let strings: Vec<String> = p
        .collection("Asserion.test_strings")
        .into_iter()
        .chain(p.collection("Assertion.test_strings"))
        .filter_map(|n| n.text().map(str::to_string))
        .collect();
    let negated = kind & 4 != 0;
    if kind & 32 != 0 && strings.len() > 1 {
        ctx.note(format!(
            "{where_}: an OR of several strings; loadfleet's checks must all hold; left out"
        ));
        return;
    }
    let field = field.trim();
    let on_body = field.is_empty() || field == "Assertion.response_data";
    let on_headers = field == "Assertion.response_headers";
    let on_code = field == "Assertion.response_code";
    if !on_body && !on_headers && !on_code {
        ctx.note(format!(
            "{where_} on {field}: loadfleet checks the body, the headers and the status; left out"
        ));
        return;
    }
    let header_name =
        regex::Regex::new(r"^(\^?)([A-Za-z](?:[A-Za-z0-9-]|\\-)*)(\s*:)").expect("regex");
    for s in strings {
        let s = ctx.eval(&s, false, &where_);
        if on_code {
            match s.trim().parse::<u32>() {
                Ok(code) if (100..=999).contains(&code) && !negated => {
                    att.status.push(code.to_string());
                }
                Ok(_) if negated => {
                    ctx.note(format!("{where_}: a NOT on the status code; left out"));
                }
                _ => ctx.note(format!("{where_}: status \"{s}\" is not a code; left out")),
            }
            continue;
        }
        // Substring on the body keeps its variables (body_contains is a
        // template); every other form becomes a regular expression.
        if on_body && !negated && kind & 16 != 0 {
            att.contains.push(template_string(&s));
            continue;
        }
        if s.contains("${") {
            ctx.note(format!(
                "{where_}: its pattern holds a variable, which loadfleet's patterns do not take; left out"
            ));
            continue;
        }
        let pattern = match kind & (1 | 2 | 8 | 16) {
            16 => regex::escape(&s),
            2 => s.clone(),
            1 => format!("^(?s:{s})$"),
            8 => format!("^{}$", regex::escape(&s)),
            _ => {
                ctx.note(format!("{where_}: test type {kind} does not map; left out"));
                continue;
            }
        };
        // Header lines are matched one at a time, as JMeter matches its
        // header text.
        // Header lines carry lower-case names here; JMeter matches names
        // without case: a pattern that starts with a name has it lowered.
        let pattern = if on_headers {
            if header_name.is_match(&pattern) {
                let lowered = header_name
                    .replace(&pattern, |c: &regex::Captures<'_>| {
                        format!("{}{}{}", &c[1], c[2].to_ascii_lowercase(), &c[3])
                    })
                    .into_owned();
                format!("(?m){lowered}")
            } else {
                // No `Name:` to lower: it may be a name alone, so the
                // pattern matches without case.
                format!("(?mi){pattern}")
            }
        } else {
            pattern
        };
        if regex::bytes::Regex::new(&pattern).is_err() {
            ctx.note(format!(
                "{where_}: its pattern does not compile here; left out"
            ));
            continue;
        }
        let list = match (on_headers, negated) {
            (false, false) => &mut att.matches,
            (false, true) => &mut att.not_matches,
            (true, false) => &mut att.headers,
            (true, true) => &mut att.headers_not,
        };
        list.push(literal(&pattern));
    }
    let _ = writeln!(att.lines, "# (a check above is from {where_})");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(name: &str, value: &str) -> String {
        format!("<stringProp name=\"{name}\">{value}</stringProp>")
    }

    fn assertion(field: &str, kind: u32, text: &str) -> String {
        format!(
            "<ResponseAssertion testclass=\"ResponseAssertion\" testname=\"a{kind}\" enabled=\"true\">\
             <collectionProp name=\"Asserion.test_strings\"><stringProp name=\"1\">{text}</stringProp></collectionProp>\
             {}<intProp name=\"Assertion.test_type\">{kind}</intProp></ResponseAssertion><hashTree/>",
            sp("Assertion.test_field", field)
        )
    }

    /// One thread group of one sampler with `children` under it.
    fn jmx(children: &str) -> String {
        format!(
            "<jmeterTestPlan><hashTree><TestPlan testclass=\"TestPlan\" testname=\"p\">\
             <elementProp name=\"TestPlan.user_defined_variables\" elementType=\"Arguments\">\
             <collectionProp name=\"Arguments.arguments\"><elementProp name=\"host\" elementType=\"Argument\">\
             {}{}</elementProp></collectionProp></elementProp></TestPlan><hashTree>\
             <ThreadGroup testclass=\"ThreadGroup\" testname=\"g\">{}{}\
             <elementProp name=\"ThreadGroup.main_controller\" elementType=\"LoopController\">{}</elementProp>\
             </ThreadGroup><hashTree>\
             <HTTPSamplerProxy testclass=\"HTTPSamplerProxy\" testname=\"s\">{}{}{}</HTTPSamplerProxy>\
             <hashTree>{children}</hashTree></hashTree></hashTree></hashTree></jmeterTestPlan>",
            sp("Argument.name", "host"),
            sp("Argument.value", "${__P(host,example.org)}"),
            sp("ThreadGroup.num_threads", "${__P(users,3)}"),
            sp("ThreadGroup.ramp_time", "2"),
            sp("LoopController.loops", "4"),
            sp("HTTPSampler.domain", "${host}"),
            sp("HTTPSampler.path", "/p"),
            sp("HTTPSampler.method", "GET"),
        )
    }

    fn convert(text: &str, props: &[(&str, &str)]) -> Imported {
        let opts = Options {
            properties: props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            base_url: None,
            name: "t".into(),
            source: "t.jmx".into(),
            out: "t.toml".into(),
            moodle: props.iter().any(|(k, _)| *k == "--moodle"),
        };
        let i = import(text, &opts).unwrap();
        // Every conversion is a valid plan.
        crate::plan::parse("t.toml", &i.plan, "t").unwrap_or_else(|e| panic!("{e}\n{}", i.plan));
        i
    }

    #[test]
    fn moodle_reads_the_footer_as_the_example_plan_does() {
        let plain = convert(&jmx(""), &[]);
        assert!(!plain.plan.contains("[[metric]]"), "{}", plain.plan);
        let i = convert(&jmx(""), &[("--moodle", "")]);
        for name in [
            "time_used",
            "db_reads",
            "db_writes",
            "db_time",
            "cache_hits",
            "cache_misses",
            "cache_sets",
            "app_hits",
            "app_misses",
        ] {
            assert!(
                i.plan.contains(&format!("name = \"{name}\"")),
                "{name}: {}",
                i.plan
            );
        }
        assert!(
            i.plan.contains("# Moodle's performance footer (--moodle)"),
            "{}",
            i.plan
        );
    }

    #[test]
    fn concurrent_thread_groups_become_scenarios_with_loads_of_their_own() {
        let group = |users: &str, loops: &str, sched: &str| {
            format!(
                "<ThreadGroup testclass=\"ThreadGroup\" testname=\"Thread Group\">{}{}{}{}{}\
                 <elementProp name=\"ThreadGroup.main_controller\" elementType=\"LoopController\">{}</elementProp>\
                 </ThreadGroup><hashTree>\
                 <HTTPSamplerProxy testclass=\"HTTPSamplerProxy\" testname=\"s\">{}{}</HTTPSamplerProxy><hashTree/></hashTree>",
                sp("ThreadGroup.num_threads", users),
                sp("ThreadGroup.ramp_time", "3"),
                format_args!("<boolProp name=\"ThreadGroup.scheduler\">{sched}</boolProp>"),
                sp("ThreadGroup.duration", "60"),
                sp("ThreadGroup.delay", "5"),
                sp("LoopController.loops", loops),
                sp("HTTPSampler.domain", "example.org"),
                sp("HTTPSampler.path", "/p"),
            )
        };
        let text = format!(
            "<jmeterTestPlan><hashTree><TestPlan testclass=\"TestPlan\" testname=\"p\"></TestPlan><hashTree>{}{}</hashTree></hashTree></jmeterTestPlan>",
            group("4", "2", "false"),
            group("7", "-1", "true"),
        );
        let i = convert(&text, &[]);
        let p = crate::plan::parse("t.toml", &i.plan, "t").unwrap();
        assert_eq!(p.scenarios[0].name, "Thread Group");
        assert_eq!(p.scenarios[1].name, "Thread Group (2)");
        let crate::plan::LoadModel::Scenarios(loads) = &p.load else {
            panic!("{:?}\n{}", p.load, i.plan)
        };
        assert_eq!((loads[0].users, loads[1].users), (4, 7));
        assert_eq!(loads[0].bound, crate::plan::RunBound::Iterations(2));
        assert_eq!(
            loads[1].bound,
            crate::plan::RunBound::Duration(std::time::Duration::from_secs(60))
        );
        assert_eq!(loads[1].start, std::time::Duration::from_secs(5));
        assert_eq!(loads[0].start, std::time::Duration::ZERO);
        assert!(i.unmapped.iter().any(|u| u.contains("Thread Group (2)")));
    }

    #[test]
    fn a_get_with_a_body_keeps_its_method_and_its_body() {
        let text = jmx("").replace(
            "<stringProp name=\"HTTPSampler.method\">GET</stringProp>",
            "<stringProp name=\"HTTPSampler.method\">GET</stringProp>\
             <boolProp name=\"HTTPSampler.postBodyRaw\">true</boolProp>\
             <elementProp name=\"HTTPsampler.Arguments\" elementType=\"Arguments\">\
             <collectionProp name=\"Arguments.arguments\"><elementProp name=\"\" elementType=\"HTTPArgument\">\
             <stringProp name=\"Argument.value\">{\"q\": 1}</stringProp></elementProp></collectionProp></elementProp>",
        );
        let i = convert(&text, &[]);
        assert!(i.plan.contains("method = \"GET\"\n"), "{}", i.plan);
        assert!(i.plan.contains("body = '{\"q\": 1}'"), "{}", i.plan);
        let p = crate::plan::parse("t.toml", &i.plan, "t").unwrap();
        assert_eq!(p.scenarios[0].steps[0].wire.method, "GET");
    }

    #[test]
    fn a_concurrency_thread_group_imports_its_schedule() {
        let text = jmx("")
            .replace(
                "<ThreadGroup testclass=\"ThreadGroup\"",
                "<com.blazemeter.jmeter.threads.concurrency.ConcurrencyThreadGroup testclass=\"x\"",
            )
            .replace(
                "</ThreadGroup>",
                &format!(
                    "{}{}{}{}{}</com.blazemeter.jmeter.threads.concurrency.ConcurrencyThreadGroup>",
                    sp("TargetLevel", "10"),
                    sp("RampUp", "1"),
                    sp("Steps", "5"),
                    sp("Hold", "2"),
                    sp("Unit", "M")
                ),
            );
        let i = convert(&text, &[]);
        let p = crate::plan::parse("t.toml", &i.plan, "t").unwrap();
        assert_eq!(
            p.load,
            crate::plan::LoadModel::Closed {
                users: 10,
                ramp_up: std::time::Duration::from_secs(60),
                bound: crate::plan::RunBound::Duration(std::time::Duration::from_secs(180)),
            },
            "{}",
            i.plan
        );
        assert!(
            i.unmapped
                .iter()
                .any(|u| u.contains("in 5 steps is a linear ramp-up of 60 s"))
        );
    }

    /// A plan whose thread group is a bzm Arrivals (or Free-Form Arrivals)
    /// one with these properties inside it.
    fn arrivals_jmx(tag: &str, props: &str) -> String {
        jmx("")
            .replace(
                "<ThreadGroup testclass=\"ThreadGroup\"",
                &format!("<com.blazemeter.jmeter.threads.arrivals.{tag} testclass=\"x\""),
            )
            .replace(
                "</ThreadGroup>",
                &format!("{props}</com.blazemeter.jmeter.threads.arrivals.{tag}>"),
            )
    }

    fn rate_stages(p: &crate::plan::Plan) -> Vec<(f64, f64, u64)> {
        let crate::plan::LoadModel::Open { stages, .. } = &p.load else {
            panic!("{:?}", p.load)
        };
        stages
            .iter()
            .map(|s| (s.from, s.to, s.duration.as_millis() as u64))
            .collect()
    }

    #[test]
    fn an_arrivals_thread_group_imports_as_its_arrival_rate() {
        // 120 arrivals a minute, ramped in 3 steps over 1 minute, held 2.
        let text = arrivals_jmx(
            "ArrivalsThreadGroup",
            &format!(
                "{}{}{}{}{}{}",
                sp("TargetLevel", "120"),
                sp("RampUp", "1"),
                sp("Steps", "3"),
                sp("Hold", "2"),
                sp("Unit", "M"),
                sp("ConcurrencyLimit", "25")
            ),
        );
        let i = convert(&text, &[]);
        let p = crate::plan::parse("t.toml", &i.plan, "t").unwrap();
        assert_eq!(
            rate_stages(&p),
            [
                (2.0 / 3.0, 2.0 / 3.0, 20_000),
                (4.0 / 3.0, 4.0 / 3.0, 20_000),
                (2.0, 2.0, 20_000),
                (2.0, 2.0, 120_000)
            ],
            "{}",
            i.plan
        );
        let crate::plan::LoadModel::Open { max_users, .. } = p.load else {
            unreachable!()
        };
        assert_eq!(max_users, 25);
        // A linear ramp from 0, in seconds, without a limit (said).
        let text = arrivals_jmx(
            "ArrivalsThreadGroup",
            &format!(
                "{}{}{}",
                sp("TargetLevel", "10"),
                sp("RampUp", "4"),
                sp("Hold", "6")
            ),
        );
        let i = convert(&text, &[]);
        let p = crate::plan::parse("t.toml", &i.plan, "t").unwrap();
        assert_eq!(rate_stages(&p), [(0.0, 10.0, 4_000), (10.0, 10.0, 6_000)]);
        assert!(
            i.unmapped
                .iter()
                .any(|u| u.contains("no concurrency limit; at most 1000 users")),
            "{:?}",
            i.unmapped
        );
        assert!(
            !i.unmapped.iter().any(|u| u.contains("loops forever")),
            "{:?}",
            i.unmapped
        );
    }

    #[test]
    fn a_free_form_arrivals_thread_group_imports_each_row_as_a_stage() {
        let row = |a: &str, b: &str, d: &str| {
            format!(
                "<collectionProp name=\"r\">{}{}{}</collectionProp>",
                sp("1", a),
                sp("2", b),
                sp("3", d)
            )
        };
        let text = arrivals_jmx(
            "FreeFormArrivalsThreadGroup",
            &format!(
                "<collectionProp name=\"Schedule\">{}{}{}</collectionProp>{}",
                row("0", "10", "5"),
                row("10", "10", "10"),
                row("30", "0", "5"),
                sp("ConcurrencyLimit", "40")
            ),
        );
        let i = convert(&text, &[]);
        let p = crate::plan::parse("t.toml", &i.plan, "t").unwrap();
        // The third row jumps from 10 to 30 at 15 s: its own start rate.
        assert_eq!(
            rate_stages(&p),
            [(0.0, 10.0, 5_000), (10.0, 10.0, 10_000), (30.0, 0.0, 5_000)],
            "{}",
            i.plan
        );
    }

    #[test]
    fn an_arrivals_thread_group_beside_a_thread_group_is_a_scenario_with_its_rate() {
        let text = jmx("").replace(
            "</hashTree></hashTree></jmeterTestPlan>",
            &format!(
                "<com.blazemeter.jmeter.threads.arrivals.ArrivalsThreadGroup testclass=\"x\" testname=\"api\">{}{}</com.blazemeter.jmeter.threads.arrivals.ArrivalsThreadGroup>\
                 <hashTree><HTTPSamplerProxy testclass=\"HTTPSamplerProxy\" testname=\"a\">{}{}</HTTPSamplerProxy><hashTree/></hashTree>\
                 </hashTree></hashTree></jmeterTestPlan>",
                sp("TargetLevel", "5"),
                sp("Hold", "30"),
                sp("HTTPSampler.domain", "${host}"),
                sp("HTTPSampler.path", "/api"),
            ),
        );
        let i = convert(&text, &[]);
        let p = crate::plan::parse("t.toml", &i.plan, "t").unwrap();
        let crate::plan::LoadModel::Scenarios(loads) = &p.load else {
            panic!("{:?}\n{}", p.load, i.plan)
        };
        assert!(loads[0].rate.is_none(), "{}", i.plan);
        assert_eq!(loads[0].users, 3);
        let rate = loads[1].rate.as_ref().expect("the arrivals group's rate");
        assert_eq!(
            (
                rate.stages[0].from,
                rate.stages[0].to,
                rate.stages[0].duration.as_secs()
            ),
            (5.0, 5.0, 30)
        );
        assert!(p.load.is_mixed());
    }

    #[test]
    fn a_throughput_shaping_timer_makes_its_thread_group_an_arrival_rate() {
        let row = |a: &str, b: &str, d: &str| {
            format!(
                "<collectionProp name=\"r\">{}{}{}</collectionProp>",
                sp("1", a),
                sp("2", b),
                sp("3", d)
            )
        };
        let timer = format!(
            "<kg.apc.jmeter.timers.VariableThroughputTimer testclass=\"kg.apc.jmeter.timers.VariableThroughputTimer\" testname=\"shape\">\
             <collectionProp name=\"load_profile\">{}{}</collectionProp></kg.apc.jmeter.timers.VariableThroughputTimer><hashTree/>",
            row("0", "10", "5"),
            row("10", "10", "20")
        );
        let text = jmx("").replace(
            "</ThreadGroup><hashTree>",
            &format!("</ThreadGroup><hashTree>{timer}"),
        );
        let i = convert(&text, &[]);
        let p = crate::plan::parse("t.toml", &i.plan, "t").unwrap();
        // One sampler an iteration: iterations per second = requests per second.
        assert_eq!(
            rate_stages(&p),
            [(0.0, 10.0, 5_000), (10.0, 10.0, 20_000)],
            "{}",
            i.plan
        );
        let crate::plan::LoadModel::Open { max_users, .. } = p.load else {
            unreachable!()
        };
        assert_eq!(max_users, 3, "the thread group's threads");
        assert!(
            i.unmapped
                .iter()
                .any(|u| u.contains("runs as an arrival rate (the open model) of at most 3 users")),
            "{:?}",
            i.unmapped
        );
        assert!(
            !i.unmapped
                .iter()
                .any(|u| u.contains("VariableThroughputTimer") && u.contains("not an element")),
            "{:?}",
            i.unmapped
        );
    }

    #[test]
    fn arguments_without_url_encode_are_decoded_as_jmeter_decodes_them() {
        let arg = |n: &str, v: &str, encode: bool| {
            format!(
                "<elementProp name=\"{n}\" elementType=\"HTTPArgument\">{}{}<boolProp name=\"HTTPArgument.always_encode\">{encode}</boolProp></elementProp>",
                sp("Argument.name", n),
                sp("Argument.value", v)
            )
        };
        let text = jmx("").replace(
            "<stringProp name=\"HTTPSampler.method\">GET</stringProp>",
            &format!(
                "<stringProp name=\"HTTPSampler.method\">POST</stringProp><elementProp name=\"HTTPsampler.Arguments\" elementType=\"Arguments\"><collectionProp name=\"Arguments.arguments\">{}{}{}{}</collectionProp></elementProp>",
                arg("q", "a%20b+c", false),
                arg("r", "x/y%2F", true),
                arg("t", "50%", false),
                arg("u", "%3D${host}%3D", false),
            ),
        );
        let i = convert(&text, &[]);
        // JMeter decodes what the user encoded, then its client encodes all:
        // the form here holds the decoded text, which loadfleet encodes.
        assert!(
            i.plan.contains(
                "form = { q = \"a b c\", r = \"x/y%2F\", t = \"50%\", u = \"=${host}=\" }"
            ),
            "{}",
            i.plan
        );
    }

    #[test]
    fn xpaths_of_the_common_shapes_read_as_css_selectors() {
        type Css<'a> = Option<(&'a str, Option<&'a str>)>;
        let cases: [(&str, Css<'_>); 10] = [
            (
                "//input[@name='logintoken']/@value",
                Some(("input[name=\"logintoken\"]", Some("value"))),
            ),
            (
                "//form[@id=\"login\"]//input[@type='hidden']/@value",
                Some(("form[id=\"login\"] input[type=\"hidden\"]", Some("value"))),
            ),
            ("//h1/text()", Some(("h1", None))),
            (
                "//div[@class='x']/a/@href",
                Some(("div[class=\"x\"] > a", Some("href"))),
            ),
            ("/html/body/h1", Some((":root > body > h1", None))),
            (
                "//a[contains(@href,'course/view')]/@href",
                Some(("a[href*=\"course/view\"]", Some("href"))),
            ),
            (
                "//*[starts-with(@id, 'item-')][@data-x]",
                Some(("*[id^=\"item-\"][data-x]", None)),
            ),
            ("//li[2]", None),
            ("//a[text()='Next']/@href", None),
            ("count(//a)", None),
        ];
        for (x, want) in cases {
            let got = xpath_to_css(x);
            let want = want.map(|(c, a)| (c.to_string(), a.map(str::to_string)));
            assert_eq!(got, want, "{x}");
        }
    }

    #[test]
    fn the_defaults_parameters_go_with_every_sampler_and_repeats_are_kept() {
        let arg = |n: &str, v: &str| {
            format!(
                "<elementProp name=\"{n}\" elementType=\"HTTPArgument\">{}{}</elementProp>",
                sp("Argument.name", n),
                sp("Argument.value", v)
            )
        };
        let args = |inner: String| {
            format!(
                "<elementProp name=\"HTTPsampler.Arguments\" elementType=\"Arguments\"><collectionProp name=\"Arguments.arguments\">{inner}</collectionProp></elementProp>"
            )
        };
        let defaults = format!(
            "<ConfigTestElement testclass=\"ConfigTestElement\" testname=\"d\">{}</ConfigTestElement><hashTree/>",
            args(arg("lang", "en"))
        );
        let text = jmx("").replace(
            "<stringProp name=\"HTTPSampler.method\">GET</stringProp>",
            &format!(
                "<stringProp name=\"HTTPSampler.method\">GET</stringProp>{}",
                args(format!("{}{}", arg("q", "x"), arg("q", "y")))
            ),
        );
        // The defaults sit in the thread group, before the sampler.
        let text = text.replacen(
            "</ThreadGroup><hashTree>",
            &format!("</ThreadGroup><hashTree>{defaults}"),
            1,
        );
        let i = convert(&text, &[]);
        // A repeated name keeps both values, in JMeter's order (the
        // sampler's own, then the defaults').
        assert!(
            i.plan
                .contains("query = [[\"q\", \"x\"], [\"q\", \"y\"], [\"lang\", \"en\"]]"),
            "{}",
            i.plan
        );
        let p = crate::plan::parse("t.toml", &i.plan, "t").unwrap();
        let q: Vec<(&str, &str)> = p.scenarios[0].steps[0]
            .wire
            .query
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str()))
            .collect();
        assert_eq!(q, [("q", "x"), ("q", "y"), ("lang", "en")]);
        assert!(
            !i.unmapped.iter().any(|u| u.contains("more than once")),
            "{:?}",
            i.unmapped
        );
    }

    #[test]
    fn a_double_property_is_read_from_its_child_elements() {
        let doc = roxmltree::Document::parse(
            "<ConstantThroughputTimer><doubleProp><name>throughput</name><value>90.5</value>\
             <savedValue>0.0</savedValue></doubleProp><intProp name=\"calcMode\">3</intProp>\
             </ConstantThroughputTimer>",
        )
        .unwrap();
        let p = Props::of(doc.root_element());
        assert_eq!(
            (p.get("throughput"), p.get("calcMode")),
            ("90.5".into(), "3".into())
        );
        assert_eq!(p.get("absent"), "");
    }

    #[test]
    fn properties_fill_functions_and_the_thread_group_its_load() {
        let i = convert(&jmx(""), &[("users", "7")]);
        assert!(
            i.plan.contains("base_url = \"http://example.org\""),
            "{}",
            i.plan
        );
        assert!(
            i.plan
                .contains("users = 7\nramp_up = \"2s\"\niterations = 4"),
            "{}",
            i.plan
        );
        let i = convert(&jmx(""), &[("host", "10.0.0.9")]);
        assert!(
            i.plan.contains("base_url = \"http://10.0.0.9\""),
            "{}",
            i.plan
        );
        assert!(i.plan.contains("users = 3"), "{}", i.plan);
    }

    #[test]
    fn response_assertions_map_to_checks_on_body_headers_and_status() {
        let children = [
            assertion("Assertion.response_data", 16, "Welcome"),
            assertion("Assertion.response_data", 2, "id=\"x\\d\""),
            assertion("Assertion.response_data", 2 | 4, "Fatal error"),
            assertion("Assertion.response_data", 8, "a.b"),
            assertion("Assertion.response_headers", 2, "Content-Type: text/html"),
            assertion("Assertion.response_headers", 16 | 4, "X-Debug"),
            assertion("Assertion.response_code", 8, "200"),
            assertion("Assertion.response_message", 2, "OK"),
        ]
        .concat();
        let i = convert(&jmx(&children), &[]);
        let check = i
            .plan
            .lines()
            .find(|l| l.starts_with("check = "))
            .unwrap_or_else(|| panic!("{}", i.plan));
        assert_eq!(
            check,
            r#"check = { status = [200], body_contains = ["Welcome"], body_matches = ['id="x\d"', '^a\.b$'], body_not_matches = ['Fatal error'], headers_match = ['(?m)content-type: text/html'], headers_not_match = ['(?mi)X\-Debug'] }"#
        );
        assert_eq!(
            i.unmapped,
            [
                "ResponseAssertion \"a2\" on Assertion.response_message: loadfleet checks the body, the headers and the status; left out"
            ]
        );
    }
}
