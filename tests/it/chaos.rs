//! The reliability proof: the real binary (`panther-triage run`) against the fake Panther with faults
//! on, killed with SIGKILL at random moments and restarted each time while alerts keep arriving and
//! growing; then one clean run to settle. From the fake's records alone: every eligible alert has
//! exactly one comment of ours (edited in place when it was re-triaged), no ineligible alert has one,
//! and the malicious ones are TRIAGED.
//!
//! `PANTHER_TRIAGE_CHAOS_KILLS` (default 30) sets the number of kills, `PANTHER_TRIAGE_CHAOS_API=graphql`
//! runs it over GraphQL (default REST), `PANTHER_TRIAGE_CHAOS_SEED` replays a run's choices (the seed
//! is printed). The daemon's log and ledger are kept under the target's tmp folder when the test
//! fails, or always with `PANTHER_TRIAGE_CHAOS_KEEP=1`. The long run:
//! `PANTHER_TRIAGE_CHAOS_KILLS=100 cargo test --test it chaos -- --nocapture`.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use chrono::Utc;
use panther_triage::fake_panther::{FakePanther, Fault, Recorded, Route};
use serde_json::{json, Value};

use crate::daemon::{alert, ip_event, Api, Env, KEY};

/// In the intel table with confidence 95 and threat type c2: the rule calls it malicious.
const BAD_IP: &str = "198.51.100.7";
/// In the intel table with confidence 20: a match, and a different comment, but no verdict.
const WEAK_IP: &str = "203.0.113.9";
const POLL_INTERVAL: &str = "200ms";

/// xorshift64*: enough randomness for choosing faults and moments, and replayable from a seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// OPEN, a listed severity, a detection the regex keeps: owed exactly one comment.
    Eligible,
    /// Listed, then dropped by the detection-ID regex.
    Filtered,
    /// LOW severity or RESOLVED: Panther never lists it to us.
    Unlisted,
}

/// An alert the test put into the fake, and what it knows about it.
struct Planted {
    id: String,
    kind: Kind,
    /// Shares detection and title with another alert: one of them may be a dedup duplicate (a link
    /// comment), so only its comment count is checked, not its verdict.
    grouped: bool,
    /// Every IP of its events so far.
    ips: Vec<String>,
    late: bool,
    grown: u32,
}

impl Planted {
    fn malicious(&self) -> bool {
        self.ips.iter().any(|ip| ip == BAD_IP)
    }

    fn weak(&self) -> bool {
        self.ips.iter().any(|ip| ip == WEAK_IP)
    }
}

/// The alerts and growth the test feeds the fake, and the faults it queues.
struct World {
    fake: FakePanther,
    api: Api,
    rng: Rng,
    planted: Vec<Planted>,
    /// Eligible alerts not seen with a comment yet (for sniping).
    awaiting: Vec<String>,
    faults: u64,
    late: u64,
    growths: u64,
}

impl World {
    fn ip(&mut self, bad: u64, weak: u64) -> String {
        let roll = self.rng.below(100);
        if roll < bad {
            BAD_IP.to_owned()
        } else if roll < bad + weak {
            WEAK_IP.to_owned()
        } else {
            format!("10.{}.{}.{}", self.rng.below(256), self.rng.below(256), self.rng.between(1, 254))
        }
    }

    fn plant(&mut self, kind: Kind, created: chrono::DateTime<Utc>, late: bool) {
        let n = self.planted.len();
        let id = format!("c{n}");
        let detection = match kind {
            Kind::Filtered => format!("AWS.Chaos{}", n % 3),
            _ => format!("Okta.Chaos{}", n % 4),
        };
        let mut a = alert(&id, created, &detection, &format!("chaos {n}"));
        a["severity"] = json!(self.rng.pick(&["CRITICAL", "HIGH", "MEDIUM"]));
        if kind == Kind::Unlisted {
            if self.rng.percent(50) {
                a["severity"] = json!("LOW");
            } else {
                a["status"] = json!("RESOLVED");
            }
        }
        let ip = self.ip(25, 15);
        self.fake.add_alert(a, ip_event(&ip));
        if kind == Kind::Eligible {
            self.awaiting.push(id.clone());
        }
        self.planted.push(Planted { id, kind, grouped: false, ips: vec![ip], late, grown: 0 });
    }

    /// A second alert with the detection and title of an earlier eligible one, within the dedup
    /// window.
    fn plant_twin(&mut self) -> bool {
        let eligible: Vec<usize> =
            (0..self.planted.len()).filter(|&i| self.planted[i].kind == Kind::Eligible).collect();
        if eligible.is_empty() {
            return false;
        }
        let of = self.rng.pick(&eligible);
        let Some(orig) = self.fake.alert(&self.planted[of].id) else { return false };
        let n = self.planted.len();
        let id = format!("c{n}");
        let mut a = alert(
            &id,
            Utc::now(),
            orig["detection"]["id"].as_str().unwrap_or_default(),
            orig["title"].as_str().unwrap_or_default(),
        );
        a["severity"] = orig["severity"].clone();
        let ip = self.ip(25, 15);
        self.fake.add_alert(a, ip_event(&ip));
        self.planted[of].grouped = true;
        self.awaiting.push(id.clone());
        self.planted.push(Planted { id, kind: Kind::Eligible, grouped: true, ips: vec![ip], late: false, grown: 0 });
        true
    }

    /// New events on an alert, most often one already answered.
    fn grow(&mut self) -> bool {
        if self.planted.is_empty() {
            return false;
        }
        let mut at = self.rng.below(self.planted.len() as u64) as usize;
        for _ in 0..6 {
            if !self.fake.comments(&self.planted[at].id).is_empty() {
                break;
            }
            at = self.rng.below(self.planted.len() as u64) as usize;
        }
        let ip = self.ip(30, 25);
        self.fake.push_events(&self.planted[at].id, ip_event(&ip));
        let p = &mut self.planted[at];
        p.ips.push(ip);
        p.grown += 1;
        self.growths += 1;
        true
    }

    /// One change in the world: a new alert (now, or late: behind the watermark but inside the poll
    /// overlap), a twin, an ineligible alert, or new events on an alert.
    fn feed_one(&mut self) {
        let roll = self.rng.below(100);
        if roll < 38 {
            self.plant(Kind::Eligible, Utc::now(), false);
        } else if roll < 48 {
            let secs = self.rng.between(20, 300) as i64;
            self.plant(Kind::Eligible, Utc::now() - chrono::Duration::seconds(secs), true);
            self.late += 1;
        } else if roll < 52 {
            if !self.plant_twin() {
                self.plant(Kind::Eligible, Utc::now(), false);
            }
        } else if roll < 60 {
            self.plant(Kind::Filtered, Utc::now(), false);
        } else if roll < 66 {
            self.plant(Kind::Unlisted, Utc::now(), false);
        } else if !self.grow() {
            self.plant(Kind::Eligible, Utc::now(), false);
        }
    }

    /// Keeps feeding, a change every 15-60 ms, until `until`. When `snipe`, returns early instead,
    /// 0-2 ms after a first comment lands on an alert: a SIGKILL then may fall between Panther
    /// storing the comment and the ledger recording it. Returns what ended the round.
    async fn feed_until(&mut self, until: Instant, snipe: bool) -> String {
        // Only a comment that lands in this round counts.
        while self.first_comment_landed().is_some() {}
        let mut next_feed = Instant::now() + Duration::from_millis(self.rng.between(15, 60));
        loop {
            let now = Instant::now();
            if now >= until {
                return "at its time".into();
            }
            if now >= next_feed {
                self.feed_one();
                next_feed = now + Duration::from_millis(self.rng.between(15, 60));
            }
            if snipe {
                if let Some(id) = self.first_comment_landed() {
                    let after = self.rng.between(0, 2);
                    tokio::time::sleep(Duration::from_millis(after)).await;
                    return format!("{after} ms after the comment on {id} landed");
                }
            }
            let step = if snipe { Duration::from_millis(1) } else { next_feed.min(until) - now };
            tokio::time::sleep(step).await;
        }
    }

    /// An eligible alert that had no comment and has one now.
    fn first_comment_landed(&mut self) -> Option<String> {
        let mut landed = None;
        self.awaiting.retain(|id| {
            if landed.is_some() || self.fake.comments(id).is_empty() {
                return true;
            }
            landed = Some(id.clone());
            false
        });
        landed
    }

    /// Queues 0-2 faults for this round (one on average: more, and the daemon does little but
    /// wait between kills); returns what they are.
    fn inject_round_faults(&mut self) -> Vec<String> {
        use Route::*;
        let any = [ListAlerts, ListEvents, GetAlert, ListComments, CreateComment, UpdateComment, PatchAlerts];
        let mut said = Vec::new();
        for _ in 0..self.rng.pick(&[0, 1, 1, 2]) {
            let (route, fault, times) = match self.rng.below(7) {
                0 => {
                    let retry_after_secs = u64::from(self.rng.percent(30));
                    (self.rng.pick(&any), Fault::TooManyRequests { retry_after_secs }, self.rng.between(1, 2))
                }
                1 => {
                    let status = self.rng.pick(&[500, 502, 503]);
                    let route = self.rng.pick(&[ListAlerts, ListEvents, CreateComment, PatchAlerts, UpdateComment]);
                    (route, Fault::ServerError { status }, self.rng.between(1, 3))
                }
                2 => {
                    let status = self.rng.pick(&[500, 503]);
                    (self.rng.pick(&any), Fault::ServerError { status }, self.rng.between(1, 3))
                }
                3 => {
                    // Some past `panther.timeout` (1 s): the client gives up, the outcome is unknown.
                    let delay = Duration::from_millis(self.rng.between(100, 1500));
                    (self.rng.pick(&any), Fault::Delay(delay), 1)
                }
                4 => (CreateComment, Fault::CommitThenDrop, self.rng.between(1, 2)),
                5 => {
                    // Stored after the client's 1 s timeout and its look for the marker, within the
                    // 2 s it waits before posting again.
                    let delay = Duration::from_millis(self.rng.between(1100, 1800));
                    (CreateComment, Fault::LateCommit(delay), 1)
                }
                _ => (self.rng.pick(&[CreateComment, UpdateComment, PatchAlerts]), Fault::CommitThenDrop, 1),
            };
            self.inject(route, fault.clone(), times as usize);
            self.faults += times;
            said.push(format!("{route:?} {fault:?} x{times}"));
        }
        said
    }

    /// Queues a fault on a REST route or, over GraphQL, on the operation that does its work (listing
    /// and editing comments are REST under both).
    fn inject(&self, route: Route, fault: Fault, times: usize) {
        let operation = match (self.api, route) {
            (Api::Rest, _) => None,
            (_, Route::ListAlerts) => Some("ListAlerts"),
            (_, Route::ListEvents) => Some("AlertEvents"),
            (_, Route::GetAlert) => Some("GetAlert"),
            (_, Route::CreateComment) => Some("CreateAlertComments"),
            (_, Route::PatchAlerts) => Some("UpdateAlertStatus"),
            _ => None,
        };
        match operation {
            Some(op) => self.fake.inject_graphql(op, fault, times),
            None => self.fake.inject(route, fault, times),
        }
    }

    /// What the fake holds against what each alert is owed.
    fn check(&self) -> Tally {
        let mut t = Tally::default();
        for p in &self.planted {
            let comments = self.fake.comments(&p.id);
            let mine = format!("panther-triage:{}:", p.id);
            let (ours, other): (Vec<&Value>, Vec<&Value>) =
                comments.iter().partition(|c| c["body"].as_str().is_some_and(|b| b.contains(&mine)));
            let describe = |why: &str| format!("{} ({why}; {})", p.id, p.describe());
            if !other.is_empty() {
                t.foreign.push(describe(&format!("{} comment(s) without its marker", other.len())));
            }
            if p.kind != Kind::Eligible {
                if !ours.is_empty() {
                    t.unwanted.push(describe(&format!("{} comment(s)", ours.len())));
                }
                continue;
            }
            t.eligible += 1;
            match ours.len() {
                0 => {
                    t.missed.push(describe("no comment"));
                    continue;
                }
                1 => {}
                n => {
                    t.duplicates.push(describe(&format!("{n} comments")));
                    continue;
                }
            }
            let body = ours[0]["body"].as_str().unwrap_or_default();
            let revision = marker_revision(body, &p.id);
            if revision.is_some_and(|r| r > 1) {
                t.revised += 1;
            }
            if p.grouped {
                continue;
            }
            let status = self.fake.alert(&p.id).map(|a| a["status"].as_str().unwrap_or_default().to_owned());
            let status = status.unwrap_or_default();
            let says = |verdict: &str| body.contains(&format!("verdict: {verdict}"));
            let rev = revision.map(|r| r.to_string()).unwrap_or_else(|| "?".into());
            if p.malicious() {
                if !says("MALICIOUS") || status != "TRIAGED" {
                    t.stale.push(describe(&format!("malicious, but the comment (revision {rev}) and status {status}")));
                }
            } else if !says("UNKNOWN") || status != "OPEN" || body.contains(WEAK_IP) != p.weak() {
                t.stale.push(describe(&format!(
                    "unknown, weak match {}, but the comment (revision {rev}) says otherwise or status {status}",
                    p.weak()
                )));
            }
        }
        t
    }
}

impl Planted {
    fn describe(&self) -> String {
        format!(
            "{:?}{}{}, grown {}, ips {}",
            self.kind,
            if self.late { ", late" } else { "" },
            if self.grouped { ", twin" } else { "" },
            self.grown,
            self.ips.join(" ")
        )
    }
}

/// The revision in our marker, `panther-triage:<id>:<revision>`, on the body's last line.
fn marker_revision(body: &str, id: &str) -> Option<i64> {
    let last = body.trim_end().lines().last()?;
    let mine = format!("panther-triage:{id}:");
    let rest = &last[last.find(&mine)? + mine.len()..];
    rest.trim_end_matches("-->").trim().parse().ok()
}

#[derive(Default)]
struct Tally {
    eligible: usize,
    missed: Vec<String>,
    duplicates: Vec<String>,
    /// Ineligible alerts with a comment of ours.
    unwanted: Vec<String>,
    /// Comments on an alert without that alert's marker.
    foreign: Vec<String>,
    /// One comment, but it does not say what the alert's events now say (or the status is wrong).
    stale: Vec<String>,
    revised: usize,
}

impl Tally {
    fn clean(&self) -> bool {
        self.missed.is_empty()
            && self.duplicates.is_empty()
            && self.unwanted.is_empty()
            && self.foreign.is_empty()
            && self.stale.is_empty()
    }

    fn problems(&self) -> String {
        let mut s = String::new();
        for (name, list) in [
            ("missed", &self.missed),
            ("duplicates", &self.duplicates),
            ("unwanted", &self.unwanted),
            ("foreign", &self.foreign),
            ("stale", &self.stale),
        ] {
            for item in list {
                s.push_str(&format!("  {name}: {item}\n"));
            }
        }
        s
    }
}

fn config(env: &Env) -> PathBuf {
    let api = match env.api {
        Api::Rest => "rest",
        Api::Graphql => "graphql",
    };
    let text = format!(
        "[panther]\nurl = \"{url}\"\napi_key = \"{KEY}\"\napi = \"{api}\"\nrequests_per_second = 1000\n\
         timeout = \"1s\"\nretry_backoff = \"20ms\"\nmax_retries = 2\n\
         [poll]\ninterval = \"{POLL_INTERVAL}\"\nlookback = \"1h\"\noverlap = \"10m\"\nmax_alerts_per_tick = 10\n\
         [filter]\nstatuses = [\"OPEN\"]\nseverities = [\"CRITICAL\", \"HIGH\", \"MEDIUM\"]\n\
         detection_id_regex = \"^(?!AWS\\\\.)\"\ndedup_window = \"15m\"\n\
         [[tables]]\nname = \"intel\"\npath = \"intel.jsonl\"\nformat = \"anomali\"\n\
         [[triage.rules]]\nname = \"bad\"\nmin_confidence = 80\nverdict = \"malicious\"\nset_status = \"TRIAGED\"\n\
         [retriage]\nwindow = \"1h\"\nmax_per_tick = 50\n\
         [state]\npath = \"state.db\"\n[log]\nformat = \"text\"\nlevel = \"info\"\n",
        url = env.server.url()
    );
    let path = env.dir.path().join("chaos.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Appends a line of the test's own to the daemon's log.
fn note(log: &Path, text: &str) {
    let mut f = OpenOptions::new().create(true).append(true).open(log).unwrap();
    writeln!(f, "===== {text}").unwrap();
}

/// The daemon under test, killed if the test ends (or fails) without stopping it.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `run -c cfg`, its stdout and stderr appended to `log` after a header line.
fn start(cfg: &Path, log: &Path, header: &str) -> Daemon {
    note(log, header);
    let f = OpenOptions::new().append(true).open(log).unwrap();
    let out: File = f.try_clone().unwrap();
    crate::bin()
        .args(["run", "-c", cfg.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdout(out)
        .stderr(f)
        .spawn()
        .map(Daemon)
        .unwrap()
}

fn signal(child: &Child, sig: &str) {
    let ok = std::process::Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success();
    assert!(ok, "kill {sig} {}", child.id());
}

async fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// Requests that write: comments, edits, PATCHes, GraphQL mutations.
fn writes(fake: &FakePanther) -> usize {
    let write = |r: &Recorded| match r.route() {
        Some(Route::Graphql) => r.body.as_deref().is_some_and(|b| b.contains("mutation")),
        _ => r.method != "GET",
    };
    fake.requests().iter().filter(|r| write(r)).count()
}

fn env_number(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

/// The last `n` lines of the log, and up to `n` lines that name `id`.
fn log_excerpt(log: &Path, id: Option<&str>, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let mut s = String::new();
    if let Some(id) = id {
        let needle = format!("alert_id={id}");
        // `alert_id=c4`, not `alert_id=c45`.
        let names = |l: &str| {
            l.match_indices(&needle).any(|(at, _)| {
                !l[at + needle.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            })
        };
        let about: Vec<&str> = lines.iter().copied().filter(|l| names(l) || l.starts_with("=====")).collect();
        s.push_str(&format!("--- log lines about {id} (last {n}) ---\n"));
        for l in &about[about.len().saturating_sub(n)..] {
            s.push_str(l);
            s.push('\n');
        }
    }
    s.push_str(&format!("--- daemon log, last {n} lines ---\n"));
    for l in &lines[lines.len().saturating_sub(n)..] {
        s.push_str(l);
        s.push('\n');
    }
    s
}

/// Keeps the log and the ledger of a failed run where they survive the temp dir.
fn keep(dir: &Path, seed: u64) -> PathBuf {
    let to = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("chaos-{seed}"));
    let _ = std::fs::create_dir_all(&to);
    for name in ["daemon.log", "chaos.toml", "state.db", "state.db-wal", "state.db-shm", "intel.jsonl"] {
        let _ = std::fs::copy(dir.join(name), to.join(name));
    }
    to
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn killed_at_random_under_faults_it_misses_nothing_and_writes_nothing_twice() {
    let kills = env_number("PANTHER_TRIAGE_CHAOS_KILLS").unwrap_or(30);
    let seed = env_number("PANTHER_TRIAGE_CHAOS_SEED").unwrap_or_else(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        t.as_nanos() as u64 % 1_000_000_007
    });
    let api = match std::env::var("PANTHER_TRIAGE_CHAOS_API").as_deref() {
        Err(_) | Ok("rest") => Api::Rest,
        Ok("graphql") => Api::Graphql,
        Ok(other) => panic!("PANTHER_TRIAGE_CHAOS_API={other:?}: rest or graphql"),
    };
    println!("chaos: seed {seed}, {api:?} (PANTHER_TRIAGE_CHAOS_SEED={seed} replays its choices)");
    let env = Env::new(api).await;
    let cfg = config(&env);
    let log = env.dir.path().join("daemon.log");
    let mut world = World {
        fake: env.fake.clone(),
        api,
        rng: Rng::new(seed),
        planted: Vec::new(),
        awaiting: Vec::new(),
        faults: 0,
        late: 0,
        growths: 0,
    };
    let started = Instant::now();
    let mut journal: Vec<String> = Vec::new();
    let mut died: Vec<String> = Vec::new();
    for _ in 0..world.rng.between(3, 8) {
        world.feed_one();
    }

    for round in 1..=kills {
        let latency = Duration::from_millis(world.rng.between(0, 15));
        env.fake.set_latency(latency);
        let faults = world.inject_round_faults();
        let after = Duration::from_millis(world.rng.between(50, 800));
        // Most rounds end when a write is in hand, the others at a random moment.
        let snipe = world.rng.percent(70);
        let line = format!(
            "round {round} at {:.2}s: latency {latency:?}, faults [{}], SIGKILL after {after:?}{}",
            started.elapsed().as_secs_f64(),
            faults.join("; "),
            if snipe { " or when a comment lands" } else { "" }
        );
        let Daemon(child) = &mut start(&cfg, &log, &line);
        let ended = world.feed_until(Instant::now() + after, snipe).await;
        if let Some(status) = child.try_wait().unwrap() {
            died.push(format!("round {round}: the daemon exited by itself ({status})"));
        }
        let _ = child.kill(); // SIGKILL
        journal.push(format!("{line}: killed {ended}"));
        assert!(wait_exit(child, Duration::from_secs(10)).await.is_some(), "SIGKILL did not end the daemon");
        note(&log, &format!("SIGKILL {ended}"));
    }

    // The last run: no new faults (the ones still queued are used up), no new alerts; it settles
    // when the fake holds what every alert is owed and no write came for a second, or when no write
    // came for five seconds (longer than the faults left over can stall it: it is stuck, and the
    // check below says what is wrong), or after 40 seconds in any case.
    env.fake.set_latency(Duration::ZERO);
    let line = format!("settle at {:.2}s: no new faults, no new alerts", started.elapsed().as_secs_f64());
    let Daemon(child) = &mut start(&cfg, &log, &line);
    journal.push(line);
    let answered_before = world.planted.iter().filter(|p| !env.fake.comments(&p.id).is_empty()).count();
    let settle_start = Instant::now();
    let (mut seen, mut quiet_since) = (writes(&env.fake), Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = writes(&env.fake);
        if now != seen {
            (seen, quiet_since) = (now, Instant::now());
        }
        let quiet = quiet_since.elapsed();
        if quiet >= Duration::from_secs(1) && world.check().clean() {
            break;
        }
        if quiet >= Duration::from_secs(5) || settle_start.elapsed() >= Duration::from_secs(40) {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            died.push(format!("settle: the daemon exited by itself ({status})"));
            break;
        }
    }
    let settled_in = settle_start.elapsed();
    if died.is_empty() {
        signal(child, "-TERM");
    }
    let stopped = wait_exit(child, Duration::from_secs(30)).await;

    let t = world.check();
    println!(
        "chaos: kills {kills}, faults injected {}, alerts {} (eligible {}), missed {}, duplicates {}, revised {}",
        world.faults,
        world.planted.len(),
        t.eligible,
        t.missed.len(),
        t.duplicates.len(),
        t.revised
    );
    println!(
        "chaos: seed {seed}, {} late alerts, {} growths, {answered_before} alerts answered before the settling \
         run, {} requests, settled in {:.1}s, {:.1}s in all",
        world.late,
        world.growths,
        env.fake.requests().len(),
        settled_in.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    let stop_ok = stopped.is_some_and(|s| s.success());
    if std::env::var_os("PANTHER_TRIAGE_CHAOS_KEEP").is_some() {
        println!("chaos: log and ledger kept in {}", keep(env.dir.path(), seed).display());
    }
    if !t.clean() || !died.is_empty() || !stop_ok {
        let first = [&t.missed, &t.duplicates, &t.unwanted, &t.foreign, &t.stale]
            .iter()
            .find_map(|l| l.first())
            .map(|s| s.split(' ').next().unwrap_or_default().to_owned());
        let kept = keep(env.dir.path(), seed);
        panic!(
            "chaos run failed (seed {seed}, {api:?}; PANTHER_TRIAGE_CHAOS_SEED={seed} \
             PANTHER_TRIAGE_CHAOS_KILLS={kills} replays the choices; log and ledger kept in {})\n\
             {}{}SIGTERM stop: {stopped:?}\nrounds:\n  {}\n{}",
            kept.display(),
            t.problems(),
            died.iter().map(|d| format!("  {d}\n")).collect::<String>(),
            journal.join("\n  "),
            log_excerpt(&log, first.as_deref(), 60)
        );
    }
}
