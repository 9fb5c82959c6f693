//! `loadfleet import jmeter` of a plan in the shapes real JMeter plans
//! have (HTTP Request Defaults and a Header Manager at TestPlan level, a
//! Flow Control Action pausing with a Uniform Random Timer as JMeter's
//! templates do, Transaction, ForEach over a regex extractor's every match,
//! Loop, If with a `__jexl3` condition, Once Only, Random, Interleave,
//! Throughput and Recording controllers, a run-time variable in a path):
//! imported, then run against the test target, which counts what each
//! controller sent, and how long the pauses kept the users.

use std::path::Path;
use std::time::Duration;

use crate::support::*;
use loadfleet_testbed::Config;

fn sp(name: &str, value: &str) -> String {
    format!("<stringProp name=\"{name}\">{value}</stringProp>")
}

/// An element with properties and the hashTree of its children.
fn el(tag: &str, name: &str, props: &str, children: &str) -> String {
    format!(
        "<{tag} testclass=\"{tag}\" testname=\"{name}\" enabled=\"true\">{props}</{tag}><hashTree>{children}</hashTree>"
    )
}

fn get(name: &str, path: &str, children: &str) -> String {
    el(
        "HTTPSamplerProxy",
        name,
        &format!(
            "{}{}{}",
            sp("HTTPSampler.path", path),
            sp("HTTPSampler.method", "GET"),
            "<boolProp name=\"HTTPSampler.follow_redirects\">true</boolProp>"
        ),
        children,
    )
}

fn regex(refname: &str, re: &str, match_no: &str, default: &str) -> String {
    el(
        "RegexExtractor",
        refname,
        &format!(
            "{}{}{}{}{}",
            sp("RegexExtractor.refname", refname),
            sp("RegexExtractor.regex", re),
            sp("RegexExtractor.template", "$1$"),
            sp("RegexExtractor.match_number", match_no),
            sp("RegexExtractor.default", default)
        ),
        "",
    )
}

fn headers(name: &str, pairs: &[(&str, &str)]) -> String {
    let items: String = pairs
        .iter()
        .map(|(n, v)| {
            format!(
                "<elementProp name=\"\" elementType=\"Header\">{}{}</elementProp>",
                sp("Header.name", n),
                sp("Header.value", v)
            )
        })
        .collect();
    el(
        "HeaderManager",
        name,
        &format!("<collectionProp name=\"HeaderManager.headers\">{items}</collectionProp>"),
        "",
    )
}

/// The plan: defaults naming `host:port` at TestPlan level, 2 users × 3 loops.
fn jmx(host: &str, port: &str) -> String {
    let defaults = el(
        "ConfigTestElement",
        "HTTP Request Defaults",
        &format!(
            "{}{}{}",
            sp("HTTPSampler.domain", host),
            sp("HTTPSampler.port", port),
            sp("HTTPSampler.protocol", "http")
        ),
        "",
    );
    let transaction = el(
        "TransactionController",
        "Home and list",
        "<boolProp name=\"TransactionController.includeTimers\">false</boolProp>",
        &format!(
            "{}{}",
            get(
                "home",
                "/home",
                &format!(
                    "{}{}",
                    headers("own headers", &[("X-Both", "sampler")]),
                    regex("bugId", "(GET)", "1", "none")
                )
            ),
            get(
                "list",
                "/list/a/b/c",
                &regex("ids", r"/([abc])\b", "-1", "")
            )
        ),
    );
    let foreach = el(
        "ForeachController",
        "each id",
        &format!(
            "{}{}<boolProp name=\"ForeachController.useSeparator\">true</boolProp>",
            sp("ForeachController.inputVal", "ids"),
            sp("ForeachController.returnVal", "id")
        ),
        &get("item", "/item/${id}", ""),
    );
    let loop_ = el(
        "LoopController",
        "twice",
        &sp("LoopController.loops", "2"),
        &get("loop", "/loop", ""),
    );
    let if_ = el(
        "IfController",
        "three ids",
        &format!(
            "{}<boolProp name=\"IfController.useExpression\">true</boolProp>",
            sp(
                "IfController.condition",
                "${__jexl3(\"${ids_matchNr}\" == \"3\",)}"
            )
        ),
        &get("yes", "/yes", ""),
    );
    let never = el(
        "IfController",
        "never",
        &sp("IfController.condition", "${__jexl3(1 == 2)}"),
        &el(
            "HTTPSamplerProxy",
            "tracker",
            &format!(
                "{}{}{}",
                sp("HTTPSampler.domain", "www.example.com"),
                sp("HTTPSampler.path", "/track"),
                sp("HTTPSampler.method", "GET")
            ),
            "",
        ),
    );
    let once = el("OnceOnlyController", "first", "", &get("once", "/once", ""));
    let random = el(
        "RandomController",
        "any",
        "",
        &format!("{}{}", get("a", "/pick/a", ""), get("b", "/pick/b", "")),
    );
    let interleave = el(
        "InterleaveControl",
        "turns",
        "",
        &format!("{}{}", get("ta", "/turn/a", ""), get("tb", "/turn/b", "")),
    );
    let throughput = el(
        "ThroughputController",
        "half",
        "<intProp name=\"ThroughputController.style\">1</intProp>\
         <boolProp name=\"ThroughputController.perThread\">true</boolProp>\
         <FloatProperty><name>ThroughputController.percentThroughput</name><value>50.0</value></FloatProperty>",
        &get("half", "/half", ""),
    );
    let think = el(
        "TestAction",
        "Think Time",
        &format!(
            "<intProp name=\"ActionProcessor.action\">1</intProp><intProp name=\"ActionProcessor.target\">0</intProp>{}",
            sp("ActionProcessor.duration", "0")
        ),
        &el(
            "UniformRandomTimer",
            "Pause",
            &format!(
                "{}{}",
                sp("ConstantTimer.delay", "100"),
                sp("RandomTimer.range", "50")
            ),
            "",
        ),
    );
    let recorded = el(
        "RecordingController",
        "Recording Controller",
        "",
        &format!(
            "{}{}",
            get("recorded", "/recorded", ""),
            get("bug", "/bug/${bugId}", "")
        ),
    );
    let group = el(
        "ThreadGroup",
        "Users",
        &format!(
            "{}{}<elementProp name=\"ThreadGroup.main_controller\" elementType=\"LoopController\">{}</elementProp>",
            sp("ThreadGroup.num_threads", "2"),
            sp("ThreadGroup.ramp_time", "0"),
            sp("LoopController.loops", "3")
        ),
        &[
            transaction,
            foreach,
            loop_,
            if_,
            never,
            once,
            random,
            interleave,
            throughput,
            think,
            recorded,
        ]
        .concat(),
    );
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<jmeterTestPlan version=\"1.2\"><hashTree>{}</hashTree></jmeterTestPlan>",
        el(
            "TestPlan",
            "flow",
            "",
            &format!(
                "{defaults}{}{group}",
                headers("plan headers", &[("X-Plan", "plan"), ("X-Both", "plan")])
            )
        )
    )
}

fn import(jmx: &Path, out: &Path) -> Exit {
    run(
        &loadfleet(),
        &[
            "import",
            "jmeter",
            jmx.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        Duration::from_secs(20),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jmeter_controllers_pauses_and_plan_level_defaults_import_as_jmeter_runs_them() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let url = bed.base_url();
    let (host, port) = url
        .trim_start_matches("http://")
        .split_once(':')
        .expect("host:port");
    let file = dir.path().join("flow.jmx");
    std::fs::write(&file, jmx(host, port)).unwrap();
    let out = dir.path().join("flow.toml");
    let exit = import(&file, &out);
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let plan = std::fs::read_to_string(&out).unwrap();
    println!("{plan}\n{}", exit.stderr);
    // The TestPlan's defaults name the target, not the one sampler that
    // names another host.
    assert!(
        plan.contains(&format!("base_url = \"http://{host}:{port}\"")),
        "{plan}"
    );
    // The sampler that names another host takes the defaults' port, as
    // JMeter fills a sampler's empty fields from its defaults.
    assert!(plan.contains(&format!("url = \"http://www.example.com:{port}/track\"")));
    for shape in [
        "group = \"Home and list\"",
        "for_each = \"ids\"\nas = \"id\"",
        "repeat = 2",
        "${ids_matchNr} == ",
        // The sampler's own Header Manager wins over the plan's, per name.
        "X-Both = \"sampler\"",
        "X-Plan = \"plan\"",
        "once = true",
        "one_of = true",
        "in_turn = true",
        "percent = 50",
        "think = \"uniform(100ms, 150ms)\"",
        "match = \"all\"",
        // A run-time variable stays one.
        "path = \"/bug/${bugId}\"",
        "path = \"/item/${id}\"",
    ] {
        assert!(plan.contains(shape), "missing {shape:?} in\n{plan}");
    }
    assert!(!plan.contains("$${"), "nothing frozen into literal text");

    let run_dir = dir.path().join("run");
    let exit = run_plan(&out, &run_dir).await;
    assert_eq!(exit.code, 0, "{}\n{}", exit.stdout, exit.stderr);
    // Before any load, the run says where it sends: the target and the
    // other host a step names (whose condition never holds here).
    assert!(
        exit.stderr.contains(&format!(
            "requests go to: http://{host}:{port} (13 steps), http://www.example.com:{port} (1 step)"
        )),
        "{}",
        exit.stderr
    );
    let served = bed.stats().paths();
    println!("served: {served:?}");
    let n = |p: &str| served.get(p).copied().unwrap_or(0);
    // 2 users × 3 iterations.
    for (path, want) in [
        ("/home", 6),
        ("/list/a/b/c", 6),
        ("/item/a", 6),
        ("/item/b", 6),
        ("/item/c", 6),
        ("/loop", 12),
        ("/yes", 6),
        ("/once", 2),
        // Per user: a, b, a.
        ("/turn/a", 4),
        ("/turn/b", 2),
        // Each user's passes 2 (of 1 to 3) : one each.
        ("/half", 2),
        ("/recorded", 6),
        ("/bug/GET", 6),
        ("/track", 0),
    ] {
        assert_eq!(n(path), want, "{path}");
    }
    assert_eq!(n("/pick/a") + n("/pick/b"), 6, "one of two per iteration");
    let s = summary(&run_dir);
    assert_eq!(s["total"]["errors"], 0, "{}", s["errors"]);
    assert_eq!(s["requests"]["Home and list"]["requests"], 6);
    // Each user pauses 100 to 150 ms per iteration, 3 times in a row: the
    // run cannot be shorter than 0.3 s (without the pause it takes a few
    // milliseconds).
    let secs = s["duration_s"].as_f64().unwrap();
    assert!(secs >= 0.3, "the pauses held the users: {secs} s");
}
