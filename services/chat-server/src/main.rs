//! veza-chat-server: `POST /messages` publishes the body to a NATS subject and returns what it published;
//! a subscriber receives every message of NATS_SUBJECT and NATS_SUBJECT.> back from NATS, and
//! `GET /messages[?room=R]` returns the last ones received. Ready only when NATS accepts this service's
//! credentials (CONNECT then PING answered by PONG) and the subscription is live.
//!
//! The NATS client is the NATS text protocol over std's TcpStream (https://docs.nats.io/reference/reference-protocols/nats-protocol):
//! Debian packages no NATS crate and crates.io is unreachable here; the protocol parts used (INFO, CONNECT,
//! PUB, SUB, MSG, PING/PONG, -ERR) are a few dozen lines, and the server's threads already are std threads,
//! so tokio (librust-tokio-dev) would add a dependency tree to vendor without removing any of this code.
//!
//! Configuration (environment): LISTEN_ADDR (0.0.0.0:8081), NATS_URL (nats://[user:pass@|token@]nats:4222),
//! NATS_SUBJECT (veza.chat), MAX_MESSAGE_BYTES (65536).

use std::collections::{BTreeMap, VecDeque};
use std::env;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::process::exit;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SERVICE: &str = "veza-chat-server";
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
const MAX_CONNECTIONS: usize = 128;

// ---------------------------------------------------------------- build metadata

/// The build's version, revision and creation time. Read at run time from the image's environment
/// (VEZA_VERSION, VEZA_REVISION, VEZA_CREATED: the Dockerfile's last instruction sets them), else dev/unknown.
/// Not compiled in: a variable that `option_env!` reads changes with every commit, and Cargo then recompiles
/// the whole crate without the benefit of its incremental cache (2.4 s instead of 0.5 s after a one-line
/// change, measured here), whereas an ENV instruction only changes the image's configuration.
struct BuildInfo {
    version: String,
    revision: String,
    created: String,
}

fn build_value(name: &str, default: &str) -> String {
    env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string())
}

/// The process's BuildInfo, read once (thread-safe; the first caller wins, later ones reuse it).
fn build_info() -> &'static BuildInfo {
    static INFO: AtomicPtr<BuildInfo> = AtomicPtr::new(std::ptr::null_mut());
    let known = INFO.load(Ordering::Acquire);
    if !known.is_null() {
        return unsafe { &*known }; // set once below, never freed
    }
    let fresh = Box::into_raw(Box::new(BuildInfo {
        version: build_value("VEZA_VERSION", "dev"),
        revision: build_value("VEZA_REVISION", "unknown"),
        created: build_value("VEZA_CREATED", "unknown"),
    }));
    match INFO.compare_exchange(std::ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => unsafe { &*fresh },
        Err(other) => {
            drop(unsafe { Box::from_raw(fresh) }); // another thread was first: keep its value
            unsafe { &*other }
        }
    }
}

// ---------------------------------------------------------------- SIGTERM without the libc crate

/// Set by SIGTERM/SIGINT: the server is draining (/ready answers 503, everything else serves).
static STOP: AtomicBool = AtomicBool::new(false);
/// Set when the drain delay (SHUTDOWN_DELAY_S) is over: the accept loop ends and in-flight requests finish.
static CLOSE: AtomicBool = AtomicBool::new(false);
const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

extern "C" {
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
}

extern "C" fn on_signal(_: i32) {
    STOP.store(true, Ordering::SeqCst); // async-signal-safe: one atomic store
}

// ---------------------------------------------------------------- JSON logs

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn now_rfc3339() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // civil-from-days (Howard Hinnant's algorithm)
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", year, month, day, rem / 3600, rem % 3600 / 60,
            rem % 60, d.subsec_millis())
}

fn log(level: &str, msg: &str, fields: &[(&str, String)]) {
    let mut line = format!("{{\"ts\":\"{}\",\"level\":\"{}\",\"msg\":{}", now_rfc3339(), level, json_str(msg));
    for (k, v) in fields {
        line.push_str(&format!(",{}:{}", json_str(k), v));
    }
    line.push_str("}\n");
    let _ = io::stdout().lock().write_all(line.as_bytes());
}

// ---------------------------------------------------------------- metrics

#[derive(Default)]
struct Metrics {
    requests: BTreeMap<(String, String, u16), u64>,
    durations: BTreeMap<String, ([u64; 10], f64, u64)>,
}

impl Metrics {
    fn observe(&mut self, method: &str, route: &str, code: u16, seconds: f64) {
        *self.requests.entry((method.to_string(), route.to_string(), code)).or_insert(0) += 1;
        let h = self.durations.entry(route.to_string()).or_insert(([0; 10], 0.0, 0));
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                h.0[i] += 1;
            }
        }
        h.1 += seconds;
        h.2 += 1;
    }

    fn render(&self, uptime: f64, published: u64, received: u64) -> String {
        let mut s = String::new();
        s += "# HELP veza_build_info Build information.\n# TYPE veza_build_info gauge\n";
        s += &format!("veza_build_info{{service=\"{}\",version={},revision={}}} 1\n", SERVICE,
                      json_str(&build_info().version), json_str(&build_info().revision));
        s += "# HELP veza_uptime_seconds Seconds since the process started.\n# TYPE veza_uptime_seconds gauge\n";
        s += &format!("veza_uptime_seconds {:.3}\n", uptime);
        s += "# HELP veza_chat_messages_published_total Messages published to NATS.\n";
        s += "# TYPE veza_chat_messages_published_total counter\n";
        s += &format!("veza_chat_messages_published_total {}\n", published);
        s += "# HELP veza_chat_messages_received_total Messages the subscriber received from NATS.\n";
        s += "# TYPE veza_chat_messages_received_total counter\n";
        s += &format!("veza_chat_messages_received_total {}\n", received);
        s += "# HELP http_requests_total HTTP requests served.\n# TYPE http_requests_total counter\n";
        for ((m, r, c), n) in &self.requests {
            s += &format!("http_requests_total{{method=\"{}\",route=\"{}\",code=\"{}\"}} {}\n", m, r, c, n);
        }
        s += "# HELP http_request_duration_seconds HTTP request latency.\n";
        s += "# TYPE http_request_duration_seconds histogram\n";
        for (r, (counts, sum, count)) in &self.durations {
            for (i, b) in BUCKETS.iter().enumerate() {
                s += &format!("http_request_duration_seconds_bucket{{route=\"{}\",le=\"{}\"}} {}\n", r, b, counts[i]);
            }
            s += &format!("http_request_duration_seconds_bucket{{route=\"{}\",le=\"+Inf\"}} {}\n", r, count);
            s += &format!("http_request_duration_seconds_sum{{route=\"{}\"}} {:.6}\n", r, sum);
            s += &format!("http_request_duration_seconds_count{{route=\"{}\"}} {}\n", r, count);
        }
        s
    }
}

// ---------------------------------------------------------------- NATS (text protocol)

enum NatsAuth {
    None,
    User(String, String),
    Token(String),
}

struct NatsTarget {
    addr: String,
    auth: NatsAuth,
}

fn parse_nats_url(url: &str) -> Result<NatsTarget, String> {
    let rest = url.strip_prefix("nats://").unwrap_or(url);
    let rest = rest.split('/').next().unwrap_or("");
    let (cred, hostport) = match rest.rsplit_once('@') {
        Some((c, h)) => (Some(c), h),
        None => (None, rest),
    };
    if hostport.is_empty() {
        return Err(format!("NATS_URL '{}' has no host", url));
    }
    let addr = if hostport.rsplit_once(':').map_or(false, |(_, p)| p.parse::<u16>().is_ok()) {
        hostport.to_string()
    } else {
        format!("{}:4222", hostport)
    };
    // nats://user:pass@host or nats://token@host (the NATS URL conventions).
    let auth = match cred.map(|c| c.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())).ok_or(c)) {
        None => NatsAuth::None,
        Some(Ok((u, p))) => NatsAuth::User(u, p),
        Some(Err(token)) => NatsAuth::Token(token.to_string()),
    };
    Ok(NatsTarget { addr, auth })
}

/// An -ERR the server sends when it refuses the credentials: PermissionDenied, which /ready lists under
/// "rejected" (waiting will not heal it; the deploy stops on it). Other -ERR lines are protocol errors.
fn nats_error(line: &str) -> io::Error {
    let lower = line.to_ascii_lowercase();
    let kind = if lower.contains("authorization violation") || lower.contains("authentication") {
        io::ErrorKind::PermissionDenied
    } else {
        io::ErrorKind::Other
    };
    io::Error::new(kind, line.to_string())
}

fn connect_line(t: &NatsTarget) -> String {
    let mut connect = format!("CONNECT {{\"verbose\":false,\"pedantic\":false,\"lang\":\"rust\",\"version\":{},\
                               \"name\":\"{}\"", json_str(&build_info().version), SERVICE);
    match &t.auth {
        NatsAuth::None => {}
        NatsAuth::User(u, p) => connect += &format!(",\"user\":{},\"pass\":{}", json_str(u), json_str(p)),
        NatsAuth::Token(k) => connect += &format!(",\"auth_token\":{}", json_str(k)),
    }
    connect + "}\r\n"
}

/// Read lines until PONG (the server has processed everything sent before the PING, and accepted the
/// CONNECT) or -ERR; answers the server's PINGs. +OK and INFO updates are skipped.
fn await_pong(stream: &mut TcpStream, reader: &mut BufReader<TcpStream>) -> io::Result<()> {
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "NATS closed the connection"));
        }
        let l = line.trim_end();
        if l == "PONG" {
            return Ok(());
        }
        if l == "PING" {
            stream.write_all(b"PONG\r\n")?;
        } else if l.starts_with("-ERR") {
            return Err(nats_error(l));
        }
    }
}

/// Connect, authenticate (CONNECT with the URL's credentials) and wait for the PONG that proves the server
/// accepted them; `extra` is sent between CONNECT and PING (a PUB, SUBs). `timeout` bounds the whole session,
/// name resolution included (a readiness answer must come within the probe's timeoutSeconds, 2 s in the chart).
fn nats_session(t: &NatsTarget, extra: &[u8], timeout: Duration) -> io::Result<(TcpStream, BufReader<TcpStream>)> {
    let deadline = Instant::now() + timeout;
    let (mut stream, mut reader, _) = nats_connect(t, timeout)?;
    let mut msg = connect_line(t).into_bytes();
    msg.extend_from_slice(extra);
    msg.extend_from_slice(b"PING\r\n");
    stream.write_all(&msg)?;
    stream.set_read_timeout(Some(remaining(deadline, &t.addr)?))?;
    await_pong(&mut stream, &mut reader)?;
    Ok((stream, reader))
}

/// The time left before `deadline`; TimedOut naming `what` when none is.
fn remaining(deadline: Instant, what: &str) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(io::ErrorKind::TimedOut, format!("{} did not answer in time", what)));
    }
    Ok(left)
}

/// The first address of `host:port`, within `timeout`. std's resolver (getaddrinfo) has no deadline of its own:
/// a name whose server went away (a stopped container's name on Docker's DNS, which then asks the upstream
/// resolver) can take longer than any probe waits. The lookup runs on a thread of its own; one that outlives the
/// deadline ends by itself when the resolver gives up.
fn resolve(addr: &str, timeout: Duration) -> io::Result<SocketAddr> {
    let (tx, rx) = std::sync::mpsc::channel();
    let name = addr.to_string();
    thread::spawn(move || {
        let _ = tx.send(name.to_socket_addrs().map(|mut found| found.next()));
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(Some(found))) => Ok(found),
        Ok(Ok(None)) => Err(io::Error::new(io::ErrorKind::NotFound, "NATS host does not resolve")),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut,
                                     format!("resolving {} took more than {:?}", addr, timeout))),
    }
}

/// TCP connect and the server's INFO line, all within `timeout` (name resolution included).
fn nats_connect(t: &NatsTarget, timeout: Duration) -> io::Result<(TcpStream, BufReader<TcpStream>, String)> {
    let deadline = Instant::now() + timeout;
    let addr = resolve(&t.addr, timeout)?;
    let stream = TcpStream::connect_timeout(&addr, remaining(deadline, &t.addr)?)?;
    let left = remaining(deadline, &t.addr)?;
    stream.set_read_timeout(Some(left))?;
    stream.set_write_timeout(Some(left))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut info = String::new();
    reader.read_line(&mut info)?;
    if !info.starts_with("INFO ") {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("no INFO line from NATS: {:?}",
                                                                      info.trim_end())));
    }
    Ok((stream, reader, info))
}

/// Publish and wait for the PONG that follows: the server has then processed the PUB (or said -ERR).
fn nats_publish(t: &NatsTarget, subject: &str, payload: &[u8]) -> io::Result<()> {
    let mut pub_msg = format!("PUB {} {}\r\n", subject, payload.len()).into_bytes();
    pub_msg.extend_from_slice(payload);
    pub_msg.extend_from_slice(b"\r\n");
    let (stream, _) = nats_session(t, &pub_msg, Duration::from_secs(2))?;
    let _ = stream.shutdown(Shutdown::Both);
    Ok(())
}

const KEEP_PER_SUBJECT: usize = 100;

/// What the subscriber received from NATS: the last KEEP_PER_SUBJECT payloads per subject, and its state.
#[derive(Default)]
struct Inbox {
    by_subject: BTreeMap<String, VecDeque<String>>,
    received: u64,
    state: Option<io::Error>, // None: subscribed; Some: why not (yet)
    subscribed: bool,
}

/// One subscription session: SUB to `subject` and `subject.>`, then read MSG lines into the inbox until the
/// connection fails. The server PINGs idle clients every 2 minutes: a 5-minute silence is a dead connection.
fn subscribe_once(t: &NatsTarget, subject: &str, inbox: &Mutex<Inbox>, max_body: usize) -> io::Result<()> {
    let subs = format!("SUB {} 1\r\nSUB {}.> 2\r\n", subject, subject);
    let (mut stream, mut reader) = nats_session(t, subs.as_bytes(), Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(300)))?;
    {
        let mut ib = inbox.lock().unwrap_or_else(|e| e.into_inner());
        ib.state = None;
        ib.subscribed = true;
    }
    log("info", "subscribed", &[("subjects", json_str(&format!("{} {}.>", subject, subject)))]);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "NATS closed the connection"));
        }
        let l = line.trim_end();
        if l == "PING" {
            stream.write_all(b"PONG\r\n")?;
        } else if l.starts_with("-ERR") {
            return Err(nats_error(l));
        } else if let Some(rest) = l.strip_prefix("MSG ") {
            // MSG <subject> <sid> [reply-to] <#bytes>
            let parts: Vec<&str> = rest.split_whitespace().collect();
            let n: usize = parts.last().and_then(|v| v.parse().ok())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad MSG line {:?}", l)))?;
            if n > max_body.max(1 << 20) {
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("MSG of {} bytes", n)));
            }
            let mut payload = vec![0u8; n + 2];
            reader.read_exact(&mut payload)?;
            payload.truncate(n);
            let mut ib = inbox.lock().unwrap_or_else(|e| e.into_inner());
            let q = ib.by_subject.entry(parts[0].to_string()).or_default();
            q.push_back(String::from_utf8_lossy(&payload).into_owned());
            while q.len() > KEEP_PER_SUBJECT {
                q.pop_front();
            }
            ib.received += 1;
        }
    }
}

/// The subscriber thread: subscribe, and after a failure say why and try again (1 s, doubling to 15 s).
fn subscriber(app: Arc<App>) {
    let mut delay = Duration::from_secs(1);
    while !CLOSE.load(Ordering::SeqCst) {
        let err = match subscribe_once(&app.nats, &app.subject, &app.inbox, app.max_body) {
            Ok(()) => io::Error::new(io::ErrorKind::Other, "subscription ended"),
            Err(e) => e,
        };
        let was = {
            let mut ib = app.inbox.lock().unwrap_or_else(|e| e.into_inner());
            let was = ib.subscribed;
            ib.subscribed = false;
            ib.state = Some(io::Error::new(err.kind(), err.to_string()));
            was
        };
        log(if was { "error" } else { "warn" }, "subscription failed", &[("error", json_str(&err.to_string()))]);
        delay = if was { Duration::from_secs(1) } else { (delay * 2).min(Duration::from_secs(15)) };
        thread::sleep(delay);
    }
}

fn valid_token(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

// ---------------------------------------------------------------- HTTP

struct Request {
    method: String,
    path: String,
    query: String,
    body: Vec<u8>,
}

struct Response {
    code: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

fn json_response(code: u16, body: String) -> Response {
    Response { code, content_type: "application/json", body: (body + "\n").into_bytes() }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK", 201 => "Created", 400 => "Bad Request", 404 => "Not Found", 405 => "Method Not Allowed",
        411 => "Length Required", 413 => "Payload Too Large", 502 => "Bad Gateway",
        503 => "Service Unavailable", _ => "Error",
    }
}

fn read_request(stream: &TcpStream, max_body: usize) -> Result<Request, Response> {
    let bad = |code: u16, msg: &str| json_response(code, format!("{{\"error\":{}}}", json_str(msg)));
    let mut reader = BufReader::new(stream.try_clone().map_err(|_| bad(400, "connection error"))?);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|_| bad(400, "cannot read the request line"))?;
    let mut parts = line.split_whitespace();
    let (method, target) = match (parts.next(), parts.next()) {
        (Some(m), Some(t)) => (m.to_string(), t.to_string()),
        _ => return Err(bad(400, "malformed request line")),
    };
    let mut length: Option<usize> = None;
    for _ in 0..100 {
        let mut h = String::new();
        if reader.read_line(&mut h).map_err(|_| bad(400, "cannot read headers"))? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                length = Some(v.trim().parse().map_err(|_| bad(400, "bad Content-Length"))?);
            } else if k.trim().eq_ignore_ascii_case("transfer-encoding") {
                return Err(bad(411, "send a Content-Length (chunked bodies are not supported)"));
            }
        }
    }
    let n = length.unwrap_or(0);
    if n > max_body {
        return Err(bad(413, "message too large"));
    }
    let mut body = vec![0u8; n];
    reader.read_exact(&mut body).map_err(|_| bad(400, "body shorter than Content-Length"))?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target, String::new()),
    };
    Ok(Request { method, path, query, body })
}

struct App {
    nats: NatsTarget,
    subject: String,
    inbox: Mutex<Inbox>,
    max_body: usize,
    started: Instant,
    metrics: Mutex<Metrics>,
    published: std::sync::atomic::AtomicU64,
}

impl App {
    fn route(&self, req: &Request) -> (&'static str, Response) {
        let err = |code: u16, msg: &str| json_response(code, format!("{{\"error\":{}}}", json_str(msg)));
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/health") => ("/health", json_response(200, format!(
                "{{\"status\":\"ok\",\"service\":\"{}\"}}", SERVICE))),
            ("GET", "/ready") => ("/ready", self.ready()),
            ("GET", "/messages") => ("/messages", self.received(req)),
            ("GET", "/version") => ("/version", json_response(200, format!(
                "{{\"service\":\"{}\",\"version\":{},\"revision\":{},\"created\":{}}}",
                SERVICE, json_str(&build_info().version), json_str(&build_info().revision), json_str(&build_info().created)))),
            ("GET", "/metrics") => {
                let text = self.metrics.lock().unwrap_or_else(|e| e.into_inner())
                    .render(self.started.elapsed().as_secs_f64(), self.published.load(Ordering::Relaxed),
                            self.inbox.lock().unwrap_or_else(|e| e.into_inner()).received);
                ("/metrics", Response { code: 200, content_type: "text/plain; version=0.0.4; charset=utf-8",
                                        body: text.into_bytes() })
            }
            ("POST", "/messages") => ("/messages", self.publish(req)),
            (_, "/messages") => ("/messages", err(405, "method not allowed")),
            (_, "/health" | "/ready" | "/version" | "/metrics") => ("other", err(405, "method not allowed")),
            _ => ("other", err(404, "not found")),
        }
    }

    /// 200 when NATS accepts the credentials now (a fresh CONNECT + PING) and the subscription is live; else
    /// 503 with each check's reason, and "rejected" naming the checks whose credentials were refused.
    fn ready(&self) -> Response {
        if STOP.load(Ordering::SeqCst) {
            return json_response(503, "{\"ready\":false,\"draining\":true}".to_string());
        }
        let mut checks: Vec<(&str, Option<io::Error>)> = vec![("nats", nats_session(&self.nats, b"", Duration::from_secs(2))
            .map(|(s, _)| { let _ = s.shutdown(Shutdown::Both); }).err())];
        let sub = {
            let ib = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
            match (&ib.state, ib.subscribed) {
                (_, true) => None,
                (Some(e), false) => Some(io::Error::new(e.kind(), format!("not subscribed: {}", e))),
                (None, false) => Some(io::Error::new(io::ErrorKind::Other, "not subscribed yet")),
            }
        };
        checks.push(("subscription", sub));
        let ok = checks.iter().all(|(_, e)| e.is_none());
        let body: Vec<String> = checks.iter().map(|(name, e)| format!("{}:{}", json_str(name), json_str(
            &e.as_ref().map_or("ok".to_string(), |e| if e.kind() == io::ErrorKind::PermissionDenied {
                format!("credentials rejected: {}", e)
            } else {
                e.to_string()
            })))).collect();
        if ok {
            return json_response(200, format!("{{\"ready\":true,\"checks\":{{{}}}}}", body.join(",")));
        }
        let rejected: Vec<String> = checks.iter()
            .filter(|(_, e)| e.as_ref().map_or(false, |e| e.kind() == io::ErrorKind::PermissionDenied))
            .map(|(name, _)| json_str(name)).collect();
        let checks_json = format!("{{{}}}", body.join(","));
        let rejected_json = format!("[{}]", rejected.join(","));
        // The pod's log says why it is not Ready (the kubelet's probe event does not carry the body).
        log(if rejected.is_empty() { "warn" } else { "error" }, "not ready",
            &[("checks", checks_json.clone()), ("rejected", rejected_json.clone())]);
        let extra = if rejected.is_empty() { String::new() } else { format!(",\"rejected\":{}", rejected_json) };
        json_response(503, format!("{{\"ready\":false,\"checks\":{}{}}}", checks_json, extra))
    }

    /// GET /messages[?room=R]: the last messages the subscriber received from NATS on that subject.
    fn received(&self, req: &Request) -> Response {
        let subject = match self.room_subject(req) {
            Ok(s) => s,
            Err(r) => return r,
        };
        let ib = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
        let msgs: Vec<String> = ib.by_subject.get(&subject).map_or(Vec::new(), |q| q.iter().map(|m| json_str(m)).collect());
        json_response(200, format!("{{\"subject\":{},\"messages\":[{}]}}", json_str(&subject), msgs.join(",")))
    }

    /// NATS_SUBJECT, or NATS_SUBJECT.R for ?room=R.
    fn room_subject(&self, req: &Request) -> Result<String, Response> {
        let mut subject = self.subject.clone();
        for kv in req.query.split('&') {
            if let Some(room) = kv.strip_prefix("room=") {
                if !valid_token(room, 64) {
                    return Err(json_response(400, format!("{{\"error\":{}}}",
                                                          json_str("room must match [A-Za-z0-9_-]{1,64}"))));
                }
                subject = format!("{}.{}", self.subject, room);
            }
        }
        Ok(subject)
    }

    fn publish(&self, req: &Request) -> Response {
        let err = |code: u16, msg: &str| json_response(code, format!("{{\"error\":{}}}", json_str(msg)));
        let text = match std::str::from_utf8(&req.body) {
            Ok(t) if !t.is_empty() => t,
            Ok(_) => return err(400, "empty message"),
            Err(_) => return err(400, "the message must be UTF-8 text"),
        };
        // ?room=NAME publishes to SUBJECT.NAME
        let subject = match self.room_subject(req) {
            Ok(s) => s,
            Err(r) => return r,
        };
        match nats_publish(&self.nats, &subject, text.as_bytes()) {
            Ok(()) => {
                self.published.fetch_add(1, Ordering::Relaxed);
                log("info", "published", &[("subject", json_str(&subject)), ("bytes", text.len().to_string())]);
                json_response(201, format!("{{\"subject\":{},\"payload\":{},\"bytes\":{}}}",
                                           json_str(&subject), json_str(text), text.len()))
            }
            Err(e) => {
                log("error", "publish failed", &[("error", json_str(&e.to_string()))]);
                err(502, &format!("NATS publish failed: {}", e))
            }
        }
    }

    fn handle(&self, stream: TcpStream) {
        let start = Instant::now();
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
        let (method, path, route, resp) = match read_request(&stream, self.max_body) {
            Ok(req) => {
                let (route, resp) = self.route(&req);
                (req.method, req.path, route, resp)
            }
            Err(resp) => (String::from("?"), String::from("?"), "other", resp),
        };
        let mut out = stream;
        let head = format!("HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                           resp.code, reason(resp.code), resp.content_type, resp.body.len());
        let _ = out.write_all(head.as_bytes()).and_then(|_| out.write_all(&resp.body)).and_then(|_| out.flush());
        let elapsed = start.elapsed().as_secs_f64();
        self.metrics.lock().unwrap_or_else(|e| e.into_inner()).observe(&method, route, resp.code, elapsed);
        if route != "/health" && route != "/metrics" {
            log("info", "request", &[("method", json_str(&method)), ("path", json_str(&path)),
                                     ("status", resp.code.to_string()),
                                     ("duration_ms", format!("{:.3}", elapsed * 1000.0))]);
        }
    }
}

fn healthcheck(listen: &str) -> i32 {
    let port = listen.rsplit(':').next().unwrap_or("8081");
    let addr: SocketAddr = match format!("127.0.0.1:{}", port).parse() {
        Ok(a) => a,
        Err(_) => return 1,
    };
    let run = || -> io::Result<bool> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
        let mut buf = String::new();
        BufReader::new(s).read_line(&mut buf)?;
        Ok(buf.starts_with("HTTP/1.1 200"))
    };
    match run() {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("healthcheck: {}", e);
            1
        }
    }
}

/// SHUTDOWN_DELAY_S: the seconds (a non-negative number, default 0) the server keeps serving with /ready at
/// 503 after SIGTERM, so Kubernetes removes the pod from the Service's endpoints before the listener closes.
fn shutdown_delay(value: Option<&str>) -> Result<Duration, String> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(Duration::ZERO),
        Some(v) => match v.parse::<f64>() {
            Ok(f) if (0.0..=3600.0).contains(&f) => Ok(Duration::from_secs_f64(f)),
            _ => Err(format!("SHUTDOWN_DELAY_S must be a number of seconds from 0 to 3600, got {:?}", v)),
        },
    }
}

fn main() {
    let listen = env::var("LISTEN_ADDR").ok().filter(|v| !v.is_empty()).unwrap_or_else(|| "0.0.0.0:8081".into());
    if env::args().skip(1).any(|a| a == "-healthcheck" || a == "--healthcheck") {
        exit(healthcheck(&listen));
    }
    let nats_url = env::var("NATS_URL").ok().filter(|v| !v.is_empty()).unwrap_or_else(|| "nats://nats:4222".into());
    let subject = env::var("NATS_SUBJECT").ok().filter(|v| !v.is_empty()).unwrap_or_else(|| "veza.chat".into());
    let max_body = match env::var("MAX_MESSAGE_BYTES").ok().filter(|v| !v.is_empty()) {
        None => 65536,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                log("error", "MAX_MESSAGE_BYTES must be a positive integer", &[("value", json_str(&v))]);
                exit(2);
            }
        },
    };
    if subject.split('.').any(|t| !valid_token(t, 64)) {
        log("error", "NATS_SUBJECT must be dot-separated tokens of [A-Za-z0-9_-]", &[("value", json_str(&subject))]);
        exit(2);
    }
    let nats = match parse_nats_url(&nats_url) {
        Ok(t) => t,
        Err(e) => {
            log("error", "bad NATS_URL", &[("error", json_str(&e))]);
            exit(2);
        }
    };
    let delay = match shutdown_delay(env::var("SHUTDOWN_DELAY_S").ok().as_deref()) {
        Ok(d) => d,
        Err(e) => {
            log("error", "bad configuration", &[("error", json_str(&e))]);
            exit(2);
        }
    };
    unsafe {
        signal(SIGTERM, on_signal);
        signal(SIGINT, on_signal);
    }
    let listener = match TcpListener::bind(&listen) {
        Ok(l) => l,
        Err(e) => {
            log("error", "cannot listen", &[("addr", json_str(&listen)), ("error", json_str(&e.to_string()))]);
            exit(1);
        }
    };
    // accept() blocks (std retries it on EINTR, so the signal alone cannot interrupt it): a watcher thread
    // sees the SIGTERM flag and wakes the loop with a connection of its own. No polling delay per request.
    let mut wake = listener.local_addr().expect("bound address");
    if wake.ip().is_unspecified() {
        wake.set_ip(if wake.is_ipv4() { Ipv4Addr::LOCALHOST.into() } else { Ipv6Addr::LOCALHOST.into() });
    }
    thread::spawn(move || {
        while !STOP.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(20));
        }
        log("info", "draining", &[("delay_s", format!("{}", delay.as_secs_f64()))]);
        thread::sleep(delay);
        CLOSE.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
    });
    let app = Arc::new(App { nats, subject, inbox: Mutex::new(Inbox::default()), max_body, started: Instant::now(),
                             metrics: Mutex::new(Metrics::default()), published: std::sync::atomic::AtomicU64::new(0) });
    {
        let app = Arc::clone(&app);
        thread::spawn(move || subscriber(app));
    }
    let active = Arc::new(AtomicUsize::new(0));
    log("info", "listening", &[("service", json_str(SERVICE)), ("addr", json_str(&listen)),
                               ("version", json_str(&build_info().version)), ("revision", json_str(&build_info().revision)),
                               ("nats", json_str(&app.nats.addr)), ("subject", json_str(&app.subject))]);
    loop {
        match listener.accept() {
            Ok(_) if CLOSE.load(Ordering::SeqCst) => break,
            Ok((stream, _)) => {
                if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                    let _ = (&stream).write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    continue;
                }
                active.fetch_add(1, Ordering::SeqCst);
                let (app, active) = (Arc::clone(&app), Arc::clone(&active));
                thread::spawn(move || {
                    app.handle(stream);
                    active.fetch_sub(1, Ordering::SeqCst);
                });
            }
            Err(e) => {
                if CLOSE.load(Ordering::SeqCst) {
                    break;
                }
                log("error", "accept failed", &[("error", json_str(&e.to_string()))]);
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
    log("info", "shutting down", &[("in_flight", active.load(Ordering::SeqCst).to_string())]);
    drop(listener);
    let deadline = Instant::now() + Duration::from_secs(4);
    while active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    log("info", "stopped", &[]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_url_credentials_follow_the_nats_conventions() {
        let t = parse_nats_url("nats://alice:s3cr%t@nats:4333").unwrap();
        assert_eq!(t.addr, "nats:4333");
        assert!(matches!(&t.auth, NatsAuth::User(u, p) if u == "alice" && p == "s3cr%t"));
        let t = parse_nats_url("nats://tok3n@nats").unwrap();
        assert_eq!(t.addr, "nats:4222");
        assert!(matches!(&t.auth, NatsAuth::Token(k) if k == "tok3n"));
        assert!(matches!(parse_nats_url("nats://nats:4222").unwrap().auth, NatsAuth::None));
        assert!(parse_nats_url("nats://").is_err());
    }

    #[test]
    fn connect_carries_the_credentials_as_json() {
        let t = parse_nats_url("nats://u:p\"q@h").unwrap();
        let line = connect_line(&t);
        assert!(line.starts_with("CONNECT {") && line.ends_with("}\r\n"), "{}", line);
        assert!(line.contains(r#""user":"u","pass":"p\"q""#), "{}", line);
        assert!(connect_line(&parse_nats_url("nats://k@h").unwrap()).contains(r#""auth_token":"k""#));
        assert!(!connect_line(&parse_nats_url("nats://h").unwrap()).contains("pass"));
    }

    #[test]
    fn refused_credentials_are_permission_denied_other_errors_are_not() {
        assert_eq!(nats_error("-ERR 'Authorization Violation'").kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(nats_error("-ERR 'Authentication Timeout'").kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(nats_error("-ERR 'Maximum Payload Violation'").kind(), io::ErrorKind::Other);
    }

    #[test]
    fn shutdown_delay_is_non_negative_seconds_default_zero() {
        assert_eq!(shutdown_delay(None), Ok(Duration::ZERO));
        assert_eq!(shutdown_delay(Some("")), Ok(Duration::ZERO));
        assert_eq!(shutdown_delay(Some("5")), Ok(Duration::from_secs(5)));
        assert_eq!(shutdown_delay(Some("1.5")), Ok(Duration::from_millis(1500)));
        for bad in ["-1", "five", "5s", "NaN", "1e9"] {
            assert!(shutdown_delay(Some(bad)).unwrap_err().contains("SHUTDOWN_DELAY_S"), "{}", bad);
        }
    }

    #[test]
    fn draining_ready_answers_503_without_asking_nats() {
        // nats at a closed port: before the drain /ready is 503 for NATS, during it 503 draining at once.
        let app = App { nats: parse_nats_url("nats://127.0.0.1:9").unwrap(), subject: "veza.chat".into(),
                        inbox: Mutex::new(Inbox::default()), max_body: 1024, started: Instant::now(),
                        metrics: Mutex::new(Metrics::default()), published: std::sync::atomic::AtomicU64::new(0) };
        assert!(!String::from_utf8_lossy(&app.ready().body).contains("draining"));
        STOP.store(true, Ordering::SeqCst);
        let r = app.ready();
        STOP.store(false, Ordering::SeqCst);
        assert_eq!(r.code, 503);
        assert_eq!(String::from_utf8_lossy(&r.body), "{\"ready\":false,\"draining\":true}\n");
    }
}
