//! Flags and environment → one `Config`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use crate::crypto::secret::Secret;
use crate::http::cors::OriginList;
use crate::providers::llm_prices::PriceTable;
use crate::providers::openai_speech::SpeechFormat;
use crate::providers::outbound::{AllowList, GuardedResolver};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Registration {
    /// Anyone may create an account (always on the free tier).
    Open,
    /// Only an admin creates accounts.
    Closed,
}

/// Where the data lives; every command takes it.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// The data folder: the database is DIR/voxflow.db, backups go to DIR/backups.
    #[arg(
        long = "data-dir",
        env = "VOXFLOW_DATA_DIR",
        default_value = "./voxflow_data",
        global = true
    )]
    pub data_dir: PathBuf,
}

impl DataArgs {
    pub fn db_path(&self) -> PathBuf {
        db_path(&self.data_dir)
    }
}

pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("voxflow.db")
}

pub fn backup_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("backups")
}

/// Everything `voxflow serve` needs.
#[derive(Debug, Clone, Args)]
pub struct Config {
    #[command(flatten)]
    pub data: DataArgs,

    /// Address to listen on; port 0 picks a free port (printed at start).
    #[arg(long, env = "VOXFLOW_HTTP", default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,

    /// Start on a missing or empty database although DIR/master.key exists
    /// (a fresh install in a folder that held one). Without it such a start
    /// is refused: the database was lost, and a new one with a new admin
    /// would hide that.
    #[arg(long)]
    pub init: bool,

    /// How long a client may take to send a request's body, in seconds;
    /// past it the request answers 408 and the connection is closed.
    #[arg(long, env = "VOXFLOW_BODY_TIMEOUT_SECS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub body_timeout_secs: u64,

    /// How long a client may take to send a request's headers, in
    /// seconds (an idle kept-alive connection gets as long for its next
    /// request); past it the connection is closed.
    #[arg(long, env = "VOXFLOW_HEADER_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout_secs: u64,

    /// The most client connections served at once (WebSocket calls
    /// included); further ones wait in the listen queue until one closes.
    /// Keep it below the process's open-file limit.
    #[arg(long, env = "VOXFLOW_MAX_CONNECTIONS", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// How often the server checks that it can still store data (a small
    /// file written in the data folder, a write transaction, and every
    /// tenth time `PRAGMA quick_check`), in seconds: `/health/readiness`
    /// answers 503 while a check fails.
    #[arg(long, env = "VOXFLOW_READINESS_CHECK_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub readiness_check_secs: u64,

    /// Take a backup into DIR/backups this often while serving (`24h`,
    /// `6h`, `90m`, `1d12h`; units s, m, h, d), as `voxflow backup` does,
    /// beside the running server. Unset: no scheduled backups.
    #[arg(long, env = "VOXFLOW_BACKUP_EVERY", value_parser = parse_duration)]
    pub backup_every: Option<std::time::Duration>,

    /// How many scheduled backups to keep; older ones are removed (manual
    /// and pre-migration backups are never removed).
    #[arg(long, env = "VOXFLOW_BACKUP_KEEP", default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub backup_keep: u32,

    /// Whether anyone may register.
    #[arg(long, env = "VOXFLOW_REGISTRATION", value_enum, default_value = "open")]
    pub registration: Registration,

    /// The first admin's email, used when no admin exists yet.
    #[arg(long, env = "VOXFLOW_ADMIN_EMAIL", default_value = "admin@voxflow.com")]
    pub admin_email: String,

    /// The first admin's password; when unset a random one is printed once.
    #[arg(long, env = "VOXFLOW_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,

    /// How long a session lasts after login, in hours.
    #[arg(long, env = "VOXFLOW_SESSION_TTL_HOURS", default_value_t = 168, value_parser = clap::value_parser!(u32).range(1..=8760))]
    pub session_ttl_hours: u32,

    /// Read-only database connections serving reads.
    #[arg(long, env = "VOXFLOW_DB_READERS", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub db_readers: u16,

    /// The most the database file may grow to, in MiB: past it, writes
    /// answer 507 STORAGE_FULL, as on a full disk, and save nothing. Unset,
    /// only the disk limits it.
    #[arg(long, env = "VOXFLOW_DB_MAX_SIZE_MB", value_parser = clap::value_parser!(u32).range(1..))]
    pub db_max_size_mb: Option<u32>,

    /// Password checks (logins, registrations, password changes) that may
    /// wait while one per core runs; beyond them the server answers 503
    /// SERVER_BUSY at once.
    #[arg(long, env = "VOXFLOW_PASSWORD_QUEUE", default_value_t = 64, value_parser = clap::value_parser!(u16).range(0..=10000))]
    pub password_queue: u16,

    /// The key vault's master key, 64 hex characters. When unset, the key
    /// lives in DIR/master.key (created on first start, mode 0600).
    #[arg(long, env = "VOXFLOW_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<Secret>,

    /// The server's own Groq key, used for tenants that saved none.
    #[arg(long, env = "GROQ_API_KEY", hide_env_values = true)]
    pub groq_api_key: Option<Secret>,

    /// The server's own Deepgram key, used for tenants that saved none.
    #[arg(long, env = "DEEPGRAM_API_KEY", hide_env_values = true)]
    pub deepgram_api_key: Option<Secret>,

    /// The server's own Twilio account, used with TWILIO_AUTH_TOKEN for
    /// tenants that saved none.
    #[arg(long, env = "TWILIO_ACCOUNT_SID")]
    pub twilio_account_sid: Option<String>,

    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    pub twilio_auth_token: Option<Secret>,

    /// The number the server's own Twilio account calls from (E.164).
    #[arg(long, env = "TWILIO_FROM_NUMBER")]
    pub twilio_from_number: Option<String>,

    /// Where Groq's OpenAI-compatible API lives (a test or a proxy may stand in).
    #[arg(
        long,
        env = "VOXFLOW_GROQ_BASE_URL",
        default_value = "https://api.groq.com/openai/v1"
    )]
    pub groq_base_url: String,

    /// Where Deepgram's API lives (a stand-in for an air-gapped install).
    #[arg(
        long,
        env = "VOXFLOW_DEEPGRAM_BASE_URL",
        default_value = "https://api.deepgram.com"
    )]
    pub deepgram_base_url: String,

    /// The OpenAI-compatible speech-to-text server of tenants whose
    /// `stt_provider` is `openai_compatible` (faster-whisper-server,
    /// speaches: `http://127.0.0.1:8000/v1`). It must be among
    /// VOXFLOW_LLM_ALLOWED_URLS when that is set.
    #[arg(long, env = "VOXFLOW_SPEECH_STT_BASE_URL")]
    pub speech_stt_base_url: Option<String>,

    /// The OpenAI-compatible text-to-speech server of tenants whose
    /// `tts_provider` is `openai_compatible` (Kokoro-FastAPI, speaches:
    /// `http://127.0.0.1:8880/v1`). It must be among
    /// VOXFLOW_LLM_ALLOWED_URLS when that is set.
    #[arg(long, env = "VOXFLOW_SPEECH_TTS_BASE_URL")]
    pub speech_tts_base_url: Option<String>,

    /// The key of those speech servers (sent as `Bearer`), when they want one.
    #[arg(long, env = "VOXFLOW_SPEECH_API_KEY", hide_env_values = true)]
    pub speech_api_key: Option<Secret>,

    /// The `model` asked of the text-to-speech server (`kokoro` for
    /// Kokoro-FastAPI; speaches wants the model's id); the tenant's
    /// `tts_voice` is the voice.
    #[arg(long, env = "VOXFLOW_SPEECH_TTS_MODEL", default_value = "kokoro")]
    pub speech_tts_model: String,

    /// The `response_format` asked of the text-to-speech server: `pcm`
    /// (24 kHz, as OpenAI defines it) or `wav` (for voices at another rate).
    #[arg(
        long,
        env = "VOXFLOW_SPEECH_TTS_FORMAT",
        value_enum,
        default_value = "pcm"
    )]
    pub speech_tts_format: SpeechFormat,

    /// Where Twilio's REST API lives (a stand-in for an air-gapped install).
    #[arg(
        long,
        env = "VOXFLOW_TWILIO_BASE_URL",
        default_value = "https://api.twilio.com"
    )]
    pub twilio_base_url: String,

    /// Where Twilio reaches this server from the internet (`https://voxflow.example.com`):
    /// the base of the webhook URLs given to Twilio, and of the URL each
    /// webhook's signature covers. Phone calls need it.
    #[arg(long, env = "VOXFLOW_PUBLIC_URL", value_parser = parse_public_url)]
    pub public_url: Option<String>,

    /// How long a key test may wait for the provider, in seconds.
    #[arg(long, env = "VOXFLOW_PROVIDER_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=120))]
    pub provider_timeout_secs: u64,

    /// The servers tenants may point their LLM (or on-prem speech) at: a
    /// comma-separated list of URL prefixes (`http://10.0.0.5:8000/v1,https://llm.internal`;
    /// `http://HOST:*` for any port of HOST). Unset, any http(s) URL outside
    /// this host's networks is allowed (loopback, private, link-local, CGNAT
    /// and metadata addresses are refused, literal or resolved); set, only
    /// these prefixes, even internal ones (the air-gapped case).
    #[arg(long, env = "VOXFLOW_LLM_ALLOWED_URLS", value_parser = check_allowed_urls)]
    pub llm_allowed_urls: Option<String>,

    /// How long one LLM reply may take, in seconds, before the call answers 502.
    #[arg(long, env = "VOXFLOW_LLM_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub llm_timeout_secs: u64,

    /// A web call with no activity for this many seconds is closed as
    /// completed (disposition `abandoned`), billed up to its last activity:
    /// its browser went away.
    #[arg(long, env = "VOXFLOW_RUN_IDLE_TIMEOUT_SECS", default_value_t = 1800, value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub run_idle_timeout_secs: u64,

    /// The shortest time between two campaign calls placed through one
    /// Twilio account (Twilio's default limit is one new call per second).
    #[arg(long, env = "VOXFLOW_DIAL_INTERVAL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub dial_interval_ms: u64,

    /// LLM prices in dollars per million input and output tokens, on top of
    /// the built-in Groq list prices: inline JSON or the path of a JSON file,
    /// `{"model": {"input": 0.59, "output": 0.79}, ...}`. Checked at start.
    #[arg(long, env = "VOXFLOW_LLM_PRICES", value_parser = PriceTable::parse)]
    pub llm_prices: Option<PriceTable>,

    /// Who may read `/metrics` without an admin session: comma-separated
    /// IP addresses and CIDR blocks.
    #[arg(long, env = "VOXFLOW_METRICS_ALLOW", default_value = "127.0.0.0/8,::1", value_parser = NetList::parse)]
    pub metrics_allow: NetList,

    /// The reverse proxies in front of this server (comma-separated IPs and
    /// CIDRs): only from them are `X-Forwarded-For` (the client's address,
    /// for throttling, rate limits, sessions and the audit log),
    /// `X-Forwarded-Proto` (HTTPS: the cookie's `Secure`, HSTS) and
    /// `X-Request-Id` believed. Empty: the peer is the client.
    #[arg(long, env = "VOXFLOW_TRUSTED_PROXIES", default_value = "", value_parser = NetList::parse)]
    pub trusted_proxies: NetList,

    /// `off` turns every request rate limit off (login throttling stays).
    #[arg(long, env = "VOXFLOW_RATE_LIMIT", value_enum, default_value = "on")]
    pub rate_limit: Switch,

    /// Requests per minute of a signed-in user on the free plan.
    #[arg(long, env = "VOXFLOW_RATE_LIMIT_FREE", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_free: u32,

    /// Requests per minute of a signed-in user on the pro plan.
    #[arg(long, env = "VOXFLOW_RATE_LIMIT_PRO", default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_pro: u32,

    /// Requests per minute of a signed-in user on the enterprise plan.
    #[arg(long, env = "VOXFLOW_RATE_LIMIT_ENTERPRISE", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_enterprise: u32,

    /// API requests per minute from one client address without a session
    /// (registration, login, the OpenAPI document).
    #[arg(long, env = "VOXFLOW_RATE_LIMIT_ANONYMOUS", default_value_t = 120, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_anonymous: u32,

    /// The web origins (`scheme://host[:port]`, comma-separated) whose pages
    /// may call the API cross-origin, with credentials, as the first
    /// edition's web app on its own dev server or host did. Empty: none.
    #[arg(long, env = "VOXFLOW_CORS_ORIGINS", default_value = "", value_parser = OriginList::parse)]
    pub cors_origins: OriginList,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

/// A list of IP networks from a comma-separated setting; a bare address is
/// a network of one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetList(pub Vec<ipnet::IpNet>);

impl NetList {
    pub fn parse(raw: &str) -> Result<NetList, String> {
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(NetList)
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        // An IPv4 peer on a dual-stack socket arrives as ::ffff:a.b.c.d.
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// A duration as people write it: whole numbers with a unit each (`s`,
/// `m`, `h`, `d`), in any order and combination: `24h`, `90m`, `1d12h`.
pub fn parse_duration(raw: &str) -> Result<std::time::Duration, String> {
    let text = raw.trim().to_ascii_lowercase();
    let bad = || {
        format!(
            "{raw:?} is not a duration: write a number and a unit (s, m, h, d), as in 24h or 1h30m"
        )
    };
    let mut secs: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        secs = n
            .checked_mul(unit)
            .and_then(|s| secs.checked_add(s))
            .ok_or_else(bad)?;
        number.clear();
    }
    if !number.is_empty() || secs == 0 {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs(secs))
}

/// Checks `VOXFLOW_LLM_ALLOWED_URLS` at start: a typo must not silently
/// allow nothing (or everything).
fn check_allowed_urls(raw: &str) -> Result<String, String> {
    AllowList::parse(raw).map(|_| raw.to_string())
}

/// `VOXFLOW_PUBLIC_URL` must be an http(s) origin with an optional path:
/// Twilio signs the exact URL it calls, so a malformed base would otherwise
/// surface only as every webhook failing its signature check.
fn parse_public_url(raw: &str) -> Result<String, String> {
    let url = raw.trim();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("must start with https:// (or http://)")?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.contains('@') {
        return Err("must name a host, without a user name or password".into());
    }
    if url.contains(['?', '#']) || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must have no query, fragment or spaces".into());
    }
    Ok(url.to_string())
}

impl Config {
    /// `public_url` without a trailing slash, when set and not blank.
    pub fn public_base(&self) -> Option<&str> {
        self.public_url
            .as_deref()
            .map(|u| u.trim().trim_end_matches('/'))
            .filter(|u| !u.is_empty())
    }

    /// Whether a tenant may point this server at `url` (an
    /// OpenAI-compatible or on-prem speech base URL): see
    /// `providers::outbound`. Judged on the normalised URL, so dot segments,
    /// percent-encoding and odd IP literal forms cannot slip past.
    pub fn llm_url_allowed(&self, url: &str) -> bool {
        // An unparsable list (only possible when set in code: the flag is
        // checked at start) allows nothing rather than everything.
        self.llm_allow_list().is_ok_and(|list| list.allows(url))
    }

    fn llm_allow_list(&self) -> Result<AllowList, String> {
        AllowList::parse(self.llm_allowed_urls.as_deref().unwrap_or(""))
    }

    /// The DNS resolver of the provider client: the operator's provider
    /// hosts and the allow-list's resolve as they are, any other name only
    /// to addresses outside this host's networks.
    pub fn outbound_resolver(&self) -> GuardedResolver {
        GuardedResolver::new(
            &self.llm_allow_list().unwrap_or_default(),
            [
                self.groq_base_url.as_str(),
                self.deepgram_base_url.as_str(),
                self.twilio_base_url.as_str(),
            ],
        )
    }

    pub fn dial_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.dial_interval_ms)
    }

    /// The LLM price table: the operator's, else the built-in one alone.
    pub fn llm_prices(&self) -> &PriceTable {
        static BUILT_IN: PriceTable = PriceTable::built_in();
        self.llm_prices.as_ref().unwrap_or(&BUILT_IN)
    }

    /// A config for `data_dir` with every other setting at its default, as
    /// `voxflow serve --data-dir DIR --http 127.0.0.1:0` would give; for tests
    /// and embedding.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            data: DataArgs {
                data_dir: data_dir.into(),
            },
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            init: false,
            body_timeout_secs: 20,
            header_timeout_secs: 10,
            max_connections: 1000,
            readiness_check_secs: 30,
            backup_every: None,
            backup_keep: 7,
            registration: Registration::Open,
            admin_email: "admin@voxflow.com".into(),
            admin_password: None,
            session_ttl_hours: 168,
            db_readers: 4,
            db_max_size_mb: None,
            password_queue: 64,
            master_key: None,
            groq_api_key: None,
            deepgram_api_key: None,
            twilio_account_sid: None,
            twilio_auth_token: None,
            twilio_from_number: None,
            groq_base_url: "https://api.groq.com/openai/v1".into(),
            deepgram_base_url: "https://api.deepgram.com".into(),
            speech_stt_base_url: None,
            speech_tts_base_url: None,
            speech_api_key: None,
            speech_tts_model: "kokoro".into(),
            speech_tts_format: SpeechFormat::Pcm,
            twilio_base_url: "https://api.twilio.com".into(),
            public_url: None,
            provider_timeout_secs: 10,
            llm_allowed_urls: None,
            llm_timeout_secs: 30,
            run_idle_timeout_secs: 1800,
            dial_interval_ms: 1000,
            llm_prices: None,
            metrics_allow: NetList::parse("127.0.0.0/8,::1").unwrap_or_default(),
            trusted_proxies: NetList::default(),
            rate_limit: Switch::On,
            rate_limit_free: 60,
            rate_limit_pro: 300,
            rate_limit_enterprise: 1000,
            rate_limit_anonymous: 120,
            cors_origins: OriginList::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_public_url;

    #[test]
    fn llm_urls_are_allowed_by_whole_prefix() {
        let mut c = super::Config::for_data_dir("x");
        assert!(
            c.llm_url_allowed("http://anything/v1"),
            "unset allows public hosts"
        );
        assert!(
            !c.llm_url_allowed("http://127.0.0.1:8080/v1"),
            "but not this host"
        );
        c.llm_allowed_urls = Some(" http://10.0.0.5:8000/v1/ , https://llm.internal".into());
        assert!(c.llm_url_allowed("http://10.0.0.5:8000/v1"));
        assert!(c.llm_url_allowed("https://llm.internal/openai/v1/"));
        assert!(!c.llm_url_allowed("http://10.0.0.5:8000/v10"));
        assert!(!c.llm_url_allowed("http://10.0.0.5:8000/v1/../../internal-admin"));
        assert!(!c.llm_url_allowed("https://llm.internal.evil.com/v1"));
        assert!(!c.llm_url_allowed("http://127.0.0.1:8080/v1"));
        c.llm_allowed_urls = Some("::".into());
        assert!(
            !c.llm_url_allowed("https://llm.internal/v1"),
            "a bad list allows nothing"
        );
    }

    #[test]
    fn durations_are_numbers_with_units() {
        use super::parse_duration;
        use std::time::Duration;
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration(" 1h30m "), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1d12h"), Ok(Duration::from_secs(129_600)));
        assert_eq!(parse_duration("45S"), Ok(Duration::from_secs(45)));
        for bad in [
            "",
            "24",
            "h",
            "0s",
            "1w",
            "1.5h",
            "-1h",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn net_lists_take_addresses_and_blocks() {
        let list = super::NetList::parse(" 127.0.0.0/8, ::1 ,10.1.2.3").unwrap();
        assert!(list.contains("127.9.9.9".parse().unwrap()));
        assert!(list.contains("::1".parse().unwrap()));
        assert!(list.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(list.contains("10.1.2.3".parse().unwrap()));
        assert!(!list.contains("10.1.2.4".parse().unwrap()));
        assert!(super::NetList::parse("").unwrap().0.is_empty());
        assert!(super::NetList::parse("10.0.0.0/33").is_err());
        assert!(super::NetList::parse("example.com").is_err());
    }

    #[test]
    fn public_urls_are_origins_with_an_optional_path() {
        assert_eq!(
            parse_public_url(" https://vox.example.com/ ").as_deref(),
            Ok("https://vox.example.com/")
        );
        assert!(parse_public_url("http://10.0.0.5:8080/voxflow").is_ok());
        for bad in [
            "vox.example.com",
            "https://",
            "https://u:p@vox.example.com",
            "https://vox.example.com/?a=1",
            "https://vox example.com",
        ] {
            assert!(parse_public_url(bad).is_err(), "{bad}");
        }
    }
}
