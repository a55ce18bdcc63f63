//! How long a table of N subscriptions takes to become the one being served, and how much
//! memory the proxy's runtime of it holds. Run by `bench/scale.sh`; by hand:
//!
//! ```sh
//! cargo run --release -p tollgate-proxy --example table_scale -- 100000 1000000
//! ```
//!
//! Per N: the manifests (one product, one plan with a rate limit and a quota, N subscriptions
//! with a key Secret each) are generated as YAML and parsed (reported separately, as the issue
//! asks), compiled from the parsed objects, built into a runtime and swapped in; then one
//! subscription is suspended and the table is rebuilt and swapped again while the first
//! runtime's cells carry over. Memory: process RSS once only the runtime (and the registry of its
//! cells) is left — parsed objects, YAML and compiled table dropped — minus RSS before the
//! manifests were made, divided by N. `bench/scale.sh` sets `MIMALLOC_PURGE_DELAY=0` so freed
//! pages leave RSS at once instead of being kept for reuse.

use std::sync::Arc;
use std::time::Instant;

use tollgate_crds::ManifestSet;
use tollgate_proxy::observe::metrics::Metrics;
use tollgate_proxy::runtime::Runtime;
use tollgate_proxy::state::Shared;

// The proxy binary's allocator, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn manifests(n: usize, suspended: Option<usize>) -> String {
    let mut out = String::with_capacity(n * 420 + 1024);
    out.push_str(
        "apiVersion: tollgate.dev/v1alpha1\nkind: Product\nmetadata: {name: api, namespace: mem}\n\
         spec:\n  backend: {url: \"http://127.0.0.1:9\"}\n  routes: [{name: all, path: /}]\n---\n\
         apiVersion: tollgate.dev/v1alpha1\nkind: Plan\nmetadata: {name: gold, namespace: mem}\n\
         spec:\n  product: api\n  rateLimit: {requests: 100, period: 1s}\n  \
         quota: {requests: 1000000, period: Month}\n---\n",
    );
    for i in 0..n {
        let state = if suspended == Some(i) {
            "Suspended"
        } else {
            "Active"
        };
        out.push_str(&format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: Subscription\nmetadata: {{name: s{i}, namespace: mem}}\n\
             spec:\n  plan: gold\n  state: {state}\n  subscriber: {{name: Sub {i}}}\n  keys: {{secretRef: {{name: s{i}-keys}}}}\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata: {{name: s{i}-keys, namespace: mem}}\n\
             stringData: {{primaryKey: scale-bench-primary-key-{i:08}, secondaryKey: scale-bench-second-key-{i:08}}}\n---\n"
        ));
    }
    out
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

fn main() {
    let counts: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let counts = if counts.is_empty() {
        vec![100_000]
    } else {
        counts
    };
    println!(
        "{:>9} {:>10} {:>11} {:>10} {:>9} {:>12} {:>12} {:>14}",
        "subs",
        "parse ms",
        "compile ms",
        "build ms",
        "swap ms",
        "rebuild ms",
        "RSS B/sub",
        "total ms"
    );
    for n in counts {
        let before = rss_bytes();
        let shared = Shared::new(Metrics::new().expect("metrics"));
        let yaml = manifests(n, None);

        let t = Instant::now();
        let mut set = ManifestSet::default();
        set.add_file("scale.yaml", &yaml);
        let parse = ms(t);
        drop(yaml);

        let t = Instant::now();
        let compiled = set.compile();
        let compile = ms(t);
        assert_eq!(
            compiled.table.subscriptions.len(),
            n,
            "every subscription compiles"
        );

        let t = Instant::now();
        let runtime = Runtime::build(&compiled.table, &shared.registry, 1);
        let build = ms(t);
        assert!(
            runtime.diagnostics().is_empty(),
            "{:?}",
            runtime.diagnostics()
        );

        let t = Instant::now();
        drop(shared.runtime.swap(Some(Arc::new(runtime))));
        shared.registry.sweep();
        let swap = ms(t);

        // A one-object change (a suspension): compiled again and rebuilt in full, the cells of
        // the other N − 1 subscriptions taken over from the registry.
        let mut changed = ManifestSet::default();
        changed.add_file("scale.yaml", &manifests(n, Some(0)));
        let t = Instant::now();
        let recompiled = changed.compile();
        let next = Runtime::build(&recompiled.table, &shared.registry, 2);
        drop(shared.runtime.swap(Some(Arc::new(next))));
        shared.registry.sweep();
        let rebuild = ms(t);
        drop((set, compiled, changed, recompiled));
        let runtime_bytes = rss_bytes().saturating_sub(before);

        println!(
            "{n:>9} {parse:>10.0} {compile:>11.0} {build:>10.0} {swap:>9.1} {rebuild:>12.0} {:>13} {:>14.0}",
            runtime_bytes / n.max(1) as u64,
            compile + build + swap
        );
    }
}
