//! The configuration schema: one YAML file describes one node.
//!
//! Every struct denies unknown keys (a typo must not silently fall back to a
//! default on a production line). Doc comments on fields become the
//! descriptions in the generated JSON Schema that editors show, so they are
//! written for the plant engineer who edits the file. So are doc comments on
//! types: a type whose doc comment would only be a note for developers (why
//! the type exists) has it as a plain `//` comment instead, which keeps it out
//! of `firmware-config/linesight.schema.json`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use super::io::*;

/// A whole node: identity, broker, Modbus devices and outputs, cameras, models, tasks.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Who this node is. Used in MQTT topics and as the Sparkplug group and edge node ids.
    pub node: NodeIdentity,
    /// The MQTT broker for telemetry. Without it the node inspects and rejects but reports nothing.
    #[serde(default)]
    pub mqtt: Option<MqttConfig>,
    /// Modbus devices (PLCs, I/O couplers), the points linesight reads and the outputs it may write.
    #[serde(default)]
    pub modbus: ModbusConfig,
    /// The conveyor: the encoder and the line-running signal (points of `modbus.points`).
    #[serde(default)]
    pub line: LineConfig,
    /// Stack-light outputs and the states they show.
    #[serde(default)]
    pub stack_light: StackLightConfig,
    /// Cameras by name.
    pub cameras: BTreeMap<String, CameraConfig>,
    /// Models by name.
    pub models: BTreeMap<String, ModelConfig>,
    /// Inspection tasks by name: each binds one camera, one model, decision rules and actions.
    pub tasks: BTreeMap<String, TaskConfig>,
    /// Process-wide settings: the ONNX Runtime library and the thread budget.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// The operator page, Prometheus metrics and health endpoints. Without it no port is opened.
    #[serde(default)]
    pub http: Option<HttpConfig>,
    /// Machine health alarms: temperature, free disk space, available memory.
    #[serde(default)]
    pub health: HealthConfig,
    /// Signed model packages: the keys this node trusts, the drop folder, the checks after a promote.
    #[serde(default)]
    pub rollout: RolloutConfig,
}

impl Config {
    /// The drop folder for model packages: `rollout.incoming`, else `<runtime.state_dir>/incoming`
    /// (the state directory is the only place the sandboxed service may write).
    pub fn incoming_dir(&self) -> PathBuf {
        self.rollout.incoming.clone().unwrap_or_else(|| self.runtime.state_dir.join("incoming"))
    }
}

/// The top-level keys, in the order the file usually has them. Kept beside the
/// struct because the loader reads sections one by one (to report every error
/// at once) and must know which keys exist; a unit test checks it against the schema.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "node",
    "mqtt",
    "modbus",
    "line",
    "stack_light",
    "cameras",
    "models",
    "tasks",
    "runtime",
    "http",
    "health",
    "rollout",
];

// The `http` section: the operator page (`/`), `/metrics`, `/healthz`, `/readyz`, `/api/status`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address and port to listen on. Keep it on 127.0.0.1 unless the plant network needs the
    /// page: everything that changes anything needs the token, but everything is readable.
    #[serde(default = "default_http_listen")]
    pub listen: std::net::SocketAddr,
    /// A file holding the bearer token that actions (reload, commands) need, mode 0600. Without
    /// it the page is read-only.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Most judged frames per second per camera a viewer is sent (the live view).
    #[serde(default = "default_live_fps")]
    pub live_fps: f64,
    /// NG, UNCERTAIN and ERROR parts kept with their image for "why was it rejected".
    #[serde(default = "default_gallery")]
    pub gallery: usize,
    /// Serve HTTPS with this certificate and key (PEM) instead of plain HTTP.
    #[serde(default)]
    pub tls: Option<HttpTlsConfig>,
}

// The page's own certificate.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpTlsConfig {
    /// The server certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Its private key (PEM), readable by the service's user alone.
    pub key: PathBuf,
}

fn default_http_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_live_fps() -> f64 {
    4.0
}

fn default_gallery() -> usize {
    24
}

// Who this node is: the names that become MQTT topic levels and Sparkplug ids.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeIdentity {
    /// Group of nodes, e.g. the line: `plant-a-line-3`. No `/`, `+` or `#`.
    pub group_id: String,
    /// This node within the group, e.g. the cell: `cell-07`. No `/`, `+` or `#`.
    pub node_id: String,
}

// The `mqtt` section: where results and telemetry go, and how they survive a broker outage.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host name or IP address.
    pub host: String,
    /// Broker TCP port.
    #[serde(default = "default_mqtt_port")]
    pub port: u16,
    /// MQTT client id; defaults to `linesight-<group_id>-<node_id>`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// First topic level of every JSON topic.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Keep-alive: the ping period. A link silent for 1.5 times this is given up (on both sides). Keep it short on a factory network.
    #[serde(default = "default_keep_alive")]
    pub keep_alive: Dur,
    /// How often the stats message is published.
    #[serde(default = "default_stats_interval")]
    pub stats_interval: Dur,
    /// User name for the broker, if it requires one.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for the broker, if it requires one.
    #[serde(default)]
    pub password: Option<Secret>,
    /// A disk queue for results and alarms, so that they survive a broker outage, a crash and a power
    /// cut (see docs/mqtt.md). Without it, what cannot be sent while no broker is connected is lost.
    #[serde(default)]
    pub queue: Option<QueueConfig>,
    /// More brokers, tried in order after `host`/`port` when it cannot be reached (or, in Sparkplug,
    /// when the primary host goes offline). linesight is connected to one broker at a time.
    #[serde(default)]
    pub failover: Vec<BrokerAddr>,
    /// TLS to the broker: a private CA, and a client certificate for mutual TLS.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// `json` (plain JSON for dashboards, the default), `sparkplug` (Sparkplug B for SCADA hosts), or
    /// `both` (two MQTT sessions, each with its own Last Will).
    #[serde(default)]
    pub dialect: Dialect,
    /// Sparkplug B settings, used when `dialect` is `sparkplug` or `both`.
    #[serde(default)]
    pub sparkplug: SparkplugConfig,
}

impl MqttConfig {
    /// A plain JSON session to `host:port` with every other setting at its default.
    pub fn new(host: &str, port: u16) -> Self {
        MqttConfig {
            host: host.into(),
            port,
            client_id: None,
            prefix: default_prefix(),
            keep_alive: default_keep_alive(),
            stats_interval: default_stats_interval(),
            username: None,
            password: None,
            queue: None,
            failover: Vec::new(),
            tls: None,
            dialect: Dialect::Json,
            sparkplug: SparkplugConfig::default(),
        }
    }
}

// A secret from the config (the broker password): read and written as the plain string, never
// shown by `Debug` (so no log line or panic message that prints the config prints it).
// Plain comments, not docs: a doc comment would land in the schema, which says `string`.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(transparent)]
#[schemars(inline)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that needs it (the MQTT CONNECT).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

// A failover broker: tried in order when the primary is unreachable.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BrokerAddr {
    pub host: String,
    #[serde(default = "default_mqtt_port")]
    pub port: u16,
}

// TLS to the broker, with a client certificate for mutual TLS; check-config reads the
// files (validate/mqtt.rs), so a bad file stops it rather than the first session.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA (or CAs) that signed the broker's certificate, e.g. the plant's private CA.
    pub ca: PathBuf,
    /// PEM client certificate (chain) for mutual TLS; needs `key`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
}

// Which MQTT payloads are published: JSON for dashboards, Sparkplug B for SCADA, or both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Dialect {
    #[default]
    Json,
    Sparkplug,
    Both,
}

impl Dialect {
    pub fn json(self) -> bool {
        matches!(self, Dialect::Json | Dialect::Both)
    }
    pub fn sparkplug(self) -> bool {
        matches!(self, Dialect::Sparkplug | Dialect::Both)
    }
}

// The Sparkplug B session's settings; used when the dialect includes Sparkplug.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SparkplugConfig {
    /// The SCADA primary host's id (`spBv1.0/STATE/<id>`): births wait until it is online, and when it
    /// goes offline linesight publishes its death and moves to the next broker. Without it, births go
    /// out right after connecting.
    #[serde(default)]
    pub primary_host: Option<String>,
    /// Where the birth/death sequence number (bdSeq) is kept across restarts; in the service's StateDirectory.
    #[serde(default = "default_bdseq_file")]
    pub bdseq_file: PathBuf,
    /// MQTT client id of the Sparkplug session; defaults to `linesight-sp-<group_id>-<node_id>`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// How often changed metrics are checked and reported (report by exception).
    #[serde(default = "default_report_every")]
    pub report_every: Dur,
}

impl Default for SparkplugConfig {
    fn default() -> Self {
        SparkplugConfig {
            primary_host: None,
            bdseq_file: default_bdseq_file(),
            client_id: None,
            report_every: default_report_every(),
        }
    }
}

fn default_bdseq_file() -> PathBuf {
    PathBuf::from("/var/lib/linesight/sparkplug-bdseq")
}
fn default_report_every() -> Dur {
    Dur::from_secs(1)
}

// The durable on-disk queue that keeps results while the broker is unreachable.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Folder of the queue's segment files, e.g. `/var/lib/linesight/queue` (the service's StateDirectory).
    pub dir: PathBuf,
    /// Largest size on disk, in MiB.
    #[serde(default = "default_queue_mb")]
    pub max_mb: u64,
    /// How often the queue is flushed to disk: what a power cut can lose at most. `0ms` flushes every message.
    #[serde(default = "default_fsync_every")]
    pub fsync_every: Dur,
    /// What happens when the queue is full: `drop-oldest` (default) or `drop-newest`. Either way it is counted and raises an alarm.
    #[serde(default)]
    pub when_full: QueueFull,
    /// Queued messages sent and not yet acknowledged by the broker, at most (1 to 16384). More is faster on a link with a long round trip; after a reconnect up to this many are sent again (duplicates, de-duplicated by `msg_id`). Lower it for a broker that limits a client's in-flight messages.
    #[serde(default = "default_queue_inflight")]
    pub inflight: u16,
}

impl QueueConfig {
    /// A queue in `dir` with every other setting at its default.
    pub fn new(dir: impl Into<PathBuf>) -> QueueConfig {
        QueueConfig {
            dir: dir.into(),
            max_mb: default_queue_mb(),
            fsync_every: default_fsync_every(),
            when_full: QueueFull::default(),
            inflight: default_queue_inflight(),
        }
    }
}

fn default_queue_mb() -> u64 {
    512
}
fn default_fsync_every() -> Dur {
    Dur::from_millis(200)
}
/// The largest `mqtt.queue.inflight`: room under MQTT's 65535 packet ids for the session's own
/// QoS 1 messages, and a bound on what the queue holds in memory (twice the window, read ahead).
pub const MAX_QUEUE_INFLIGHT: u16 = 16384;
// Enough for the broker's ceiling on loopback (docs/benchmarks.md, "The MQTT disk queue"): the
// window is what keeps the link busy while acknowledgements travel and the queue reads ahead.
fn default_queue_inflight() -> u16 {
    1024
}

// What a full queue gives up: bounded disk use beats an unbounded backlog.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum QueueFull {
    #[default]
    DropOldest,
    DropNewest,
}

fn default_mqtt_port() -> u16 {
    1883
}
fn default_prefix() -> String {
    "linesight".to_string()
}
fn default_keep_alive() -> Dur {
    Dur::from_secs(5)
}
fn default_stats_interval() -> Dur {
    Dur::from_secs(5)
}

// One camera (or recorded stand-in): where its frames come from and how they are paced and shaped.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Where frames come from.
    pub source: SourceConfig,
    /// Whether each frame stands for one part, or frames are samples of a continuous stream.
    #[serde(default)]
    pub mode: CameraMode,
    /// Play a file or folder at this rate (frames per second), as a live camera would deliver it.
    /// Without it, files are read as fast as inspection takes them and nothing is dropped.
    #[serde(default)]
    pub fps: Option<f64>,
    /// Start a file or folder again from the beginning when it ends.
    #[serde(default, rename = "loop")]
    pub looping: bool,
    /// Frames that may wait for inspection. Small is better: a late verdict is a useless verdict.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// The camera is `stalled` (a fault) after this many frame intervals (`fps`) without a new
    /// frame, or this many identical frames in a row. Identical frames are never inspected.
    #[serde(default = "default_stall_frames")]
    pub stall_frames: u32,
    /// Turn every frame clockwise by 0, 90, 180 or 270 degrees (a camera mounted on its side).
    #[serde(default)]
    pub rotate: Rotation,
    /// Keep only `[x, y, width, height]` of each frame, in pixels of the rotated image.
    #[serde(default)]
    pub crop: Option<[u32; 4]>,
    /// RTSP: the longest an open or a read may take before the camera is `offline` and reconnected.
    #[serde(default = "default_camera_timeout")]
    pub timeout: Dur,
    /// JPEG frames (MJPG files and RTSP streams) decoded at a reduced size: `auto` takes the
    /// largest of 1/8, 1/4, 1/2 that still covers what the model resizes the frame to; `full`
    /// never reduces; `1/2`, `1/4`, `1/8` force one (the model still gets its input size).
    #[serde(default)]
    pub decode: Decode,
}

// How a camera decodes its JPEG frames (part::fit explains the choice).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum Decode {
    #[default]
    #[serde(rename = "auto")]
    Auto,
    #[serde(rename = "full")]
    Full,
    #[serde(rename = "1/2")]
    Half,
    #[serde(rename = "1/4")]
    Quarter,
    #[serde(rename = "1/8")]
    Eighth,
}

impl Decode {
    /// The reduction forced by the config (`None` for `auto`).
    pub fn forced(self) -> Option<u32> {
        match self {
            Decode::Auto => None,
            Decode::Full => Some(1),
            Decode::Half => Some(2),
            Decode::Quarter => Some(4),
            Decode::Eighth => Some(8),
        }
    }
}

fn default_camera_timeout() -> Dur {
    Dur::from_secs(5)
}

/// A clockwise quarter-turn of the image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(into = "u16")]
pub enum Rotation {
    #[default]
    R0,
    R90,
    R180,
    R270,
}

impl Rotation {
    pub fn degrees(self) -> u16 {
        match self {
            Rotation::R0 => 0,
            Rotation::R90 => 90,
            Rotation::R180 => 180,
            Rotation::R270 => 270,
        }
    }

    /// OpenCV's `rotate` code; `None` for no turn.
    pub fn opencv_code(self) -> Option<i32> {
        match self {
            Rotation::R0 => None,
            Rotation::R90 => Some(opencv::core::ROTATE_90_CLOCKWISE),
            Rotation::R180 => Some(opencv::core::ROTATE_180),
            Rotation::R270 => Some(opencv::core::ROTATE_90_COUNTERCLOCKWISE),
        }
    }
}

impl From<Rotation> for u16 {
    fn from(r: Rotation) -> u16 {
        r.degrees()
    }
}

impl JsonSchema for Rotation {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Rotation".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A clockwise turn in degrees.",
            "type": "integer",
            "enum": [0, 90, 180, 270]
        })
    }
}

impl<'de> Deserialize<'de> for Rotation {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u16::deserialize(d)? {
            0 => Ok(Rotation::R0),
            90 => Ok(Rotation::R90),
            180 => Ok(Rotation::R180),
            270 => Ok(Rotation::R270),
            n => Err(serde::de::Error::custom(format!("rotate {n} is not a quarter turn: use 0, 90, 180 or 270"))),
        }
    }
}

fn default_stall_frames() -> u32 {
    3
}

fn default_queue() -> usize {
    4
}

/// A frame source. Exactly one key.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceConfig {
    /// A video file (any container and codec OpenCV's FFmpeg back end reads).
    File(PathBuf),
    /// A folder of images (png, jpg, bmp, tif), read in file-name order.
    Directory(PathBuf),
    /// A V4L2 device such as `/dev/video0`.
    V4l2(V4l2Config),
    /// An RTSP URL, e.g. `rtsp://10.0.0.20:554/stream1`.
    Rtsp(String),
    /// A GStreamer pipeline ending in `appsink`, e.g. a Jetson CSI camera through `nvarguscamerasrc ! nvvidconv`.
    Gstreamer(String),
}

// A V4L2 camera device and the format to ask it for.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct V4l2Config {
    /// Device node, e.g. `/dev/video0`.
    pub device: PathBuf,
    /// Requested width in pixels.
    #[serde(default)]
    pub width: Option<u32>,
    /// Requested height in pixels.
    #[serde(default)]
    pub height: Option<u32>,
    /// Requested frame rate.
    #[serde(default)]
    pub fps: Option<f64>,
    /// Requested pixel format as a FourCC, e.g. `MJPG` or `YUYV`. `MJPG` is read through
    /// GStreamer's `v4l2src`, compressed, so that the camera's `decode` can reduce it.
    #[serde(default)]
    pub fourcc: Option<String>,
}

// What a frame means: one part, a sample of a continuous stream, or the frame for a trigger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CameraMode {
    /// Each frame is one part (the camera is triggered by a photo-eye). A frame is never dropped:
    /// if it cannot be inspected in time its part gets ERROR and the fail-safe action.
    #[default]
    PartPerFrame,
    /// Frames are samples of a continuous stream; when inspection falls behind, the oldest waiting frame is dropped and counted.
    FreeRunning,
    /// Parts are announced by the task's `trigger` (a photo-eye or a part counter read over Modbus);
    /// the first frame captured after each trigger is that part's frame, other frames are not inspected.
    Triggered,
}

// One ONNX model, shared by every task that names it, with how it is batched and run.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The ONNX file.
    pub path: PathBuf,
    /// The model's contract. Read from the model's metadata when omitted.
    #[serde(default)]
    pub kind: Option<ModelKind>,
    /// A JSON sidecar with the preprocessing contract, for models whose ONNX file carries no `linesight` metadata.
    /// Defaults to `<path>.json` when that file exists.
    #[serde(default)]
    pub sidecar: Option<PathBuf>,
    /// The model file's SHA-256, 64 hex digits (`sha256sum model.onnx`). When set, a file with other
    /// content is refused at load (a model error naming the file, the pinned and the actual hash).
    #[serde(default)]
    pub sha256: Option<String>,
    /// Execution providers in priority order. Each one either registers or is reported with the reason, then the next is tried.
    #[serde(default = "default_providers")]
    pub providers: Vec<ProviderConfig>,
    /// Frames judged in one inference call. Tasks that share this model have their cameras' frames
    /// batched together; above 1 the model needs a batch dimension that is dynamic or at least this big.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// How long a partial batch waits for frames from the other cameras before it runs anyway.
    #[serde(default = "default_batch_wait")]
    pub batch_wait: Dur,
    /// YOLO classification models: the classes that mean a good part. Defaults to a class named
    /// `good` or `ok` (any case); a model without one must name them here.
    #[serde(default)]
    pub ok_classes: Vec<String>,
}

fn default_batch() -> usize {
    1
}

fn default_batch_wait() -> Dur {
    Dur::from_millis(2)
}

fn default_providers() -> Vec<ProviderConfig> {
    vec![ProviderConfig::Cpu(CpuProvider::default())]
}

// How a model's outputs are read (which adapter), when its metadata does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// N-class image classifier (softmax or logits output) with a linesight contract.
    Classifier,
    /// Ultralytics YOLO detection export (raw or `nms=True`).
    YoloDetect,
    /// Ultralytics YOLO segmentation export (boxes and masks).
    YoloSegment,
    /// Ultralytics YOLO classification export.
    YoloClassify,
    /// anomalib export (PatchCore, PaDiM, ...) with a sidecar giving its input size and threshold.
    Anomaly,
}

// An ONNX Runtime execution provider to try, in priority order.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProviderConfig {
    /// NVIDIA TensorRT (Jetson, dGPU). The first start builds an engine, which can take minutes; cache it.
    Tensorrt(TensorRtProvider),
    /// NVIDIA CUDA.
    Cuda(CudaProvider),
    /// The CPU: always available.
    Cpu(CpuProvider),
}

// Settings of the TensorRT execution provider (Jetson, NVIDIA GPUs).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TensorRtProvider {
    /// GPU index.
    #[serde(default)]
    pub device: u32,
    /// Build the engine in FP16.
    #[serde(default)]
    pub fp16: bool,
    /// Folder for built engines and the timing cache, so that a restart does not rebuild them.
    #[serde(default)]
    pub engine_cache: Option<PathBuf>,
}

// Settings of the CUDA execution provider.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CudaProvider {
    /// GPU index.
    #[serde(default)]
    pub device: u32,
}

// Settings of the CPU execution provider.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CpuProvider {
    /// Threads for one inference; defaults to the runtime thread budget.
    #[serde(default)]
    pub threads: Option<usize>,
}

// One inspection: a camera, a model, the rules that turn scores into a verdict, and the
// reject gate that acts on it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    /// The camera (a key of `cameras`) this task inspects.
    pub camera: String,
    /// The model (a key of `models`) that judges each frame.
    pub model: String,
    /// How scores become a verdict.
    #[serde(default)]
    pub rules: RulesConfig,
    /// The reject gate: fired for NG parts and, fail-safe, for parts that could not be judged (ERROR).
    #[serde(default)]
    pub reject: Option<RejectConfig>,
    /// The shortest time between two parts at full line speed. A reject pulse must be shorter.
    #[serde(default)]
    pub min_part_interval: Option<Dur>,
    /// Longest time one inference may take before its part is given ERROR (and rejected).
    #[serde(default = "default_inference_timeout")]
    pub inference_timeout: Dur,
    /// What announces a part: a photo-eye or part counter point. Requires the camera's `mode: triggered`.
    #[serde(default)]
    pub trigger: Option<TriggerConfig>,
    /// A result block (a key of `modbus.result_blocks`) the PLC reads each verdict from, with a handshake.
    #[serde(default)]
    pub handshake: Option<String>,
    /// What remote commands (JSON or Sparkplug) may change in this task. Without it, `set-threshold`
    /// may move the NG threshold by at most 0.2 from the configured one (never below 0.05 or above
    /// 0.95) and `disable-task` is refused.
    #[serde(default)]
    pub commands: TaskCommandsConfig,
    /// Evidence capture: keep the images of judged parts (every NG, UNCERTAIN and ERROR part, a
    /// sample of OK parts) with a JSON sidecar each, for review and training. Without it nothing
    /// is written.
    #[serde(default)]
    pub capture: Option<CaptureConfig>,
}

// What a task keeps of its judged parts, where, and how much at most. Written by one thread per
// node off the inspection path: a part is never delayed by it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureConfig {
    /// Folder of the store; the task's records go under `<dir>/<task>/<YYYY-MM-DD>/`. Default:
    /// `<runtime.state_dir>/capture`.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Keep every NG part.
    #[serde(default = "yes")]
    pub ng: bool,
    /// Keep every UNCERTAIN part.
    #[serde(default = "yes")]
    pub uncertain: bool,
    /// Keep every ERROR part that has a frame (a part that timed out before inference has none).
    #[serde(default = "yes")]
    pub error: bool,
    /// Keep one OK part in this many (1 keeps every OK part). With `ok_per_hour` too, an OK
    /// part is kept when either says so.
    #[serde(default)]
    pub ok_every: Option<u64>,
    /// Keep at most this many OK parts an hour, spread over the hour (the first OK part after
    /// each `3600 s / ok_per_hour`).
    #[serde(default)]
    pub ok_per_hour: Option<u64>,
    /// `png` (default, lossless) or `jpeg`.
    #[serde(default)]
    pub format: ImageFormat,
    /// JPEG quality, 1 to 100 (`format: jpeg` only).
    #[serde(default = "default_jpeg_quality")]
    pub jpeg_quality: u8,
    /// Largest size of the task's records on disk, e.g. `2 GB` or `500 MiB`; the oldest records
    /// are deleted first. Default: `1 GB`.
    #[serde(default = "default_capture_bytes")]
    pub max_bytes: Size,
    /// Most records (an image and its sidecar) the task keeps; the oldest are deleted first.
    /// Default: 100000.
    #[serde(default = "default_capture_files")]
    pub max_files: u64,
    /// Records waiting for the writer, at most; when it is full a record is dropped and counted,
    /// never waited for. Default: 16.
    #[serde(default = "default_capture_queue")]
    pub queue: usize,
}

/// The image file format of captured parts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ImageFormat {
    /// Lossless PNG.
    #[default]
    Png,
    /// JPEG at `jpeg_quality`.
    Jpeg,
}

impl ImageFormat {
    /// The file name extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Jpeg => "jpg",
        }
    }
}

fn yes() -> bool {
    true
}
fn default_jpeg_quality() -> u8 {
    95
}
fn default_capture_bytes() -> Size {
    Size(1_000_000_000)
}
fn default_capture_files() -> u64 {
    100_000
}
fn default_capture_queue() -> usize {
    16
}

/// A size in bytes written with its unit: `500 MB`, `2 GB`, `1.5 GiB`, `64 KiB`, `4096 B`.
///
/// A bare number is refused, like a duration without its unit: `max_bytes: 2` is surely not two bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Size(pub u64);

impl Size {
    pub fn get(self) -> u64 {
        self.0
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("size `{t}` has no unit; write it with one, e.g. `{t} MB` or `{t} GB`"))?;
        let (num, unit) = t.split_at(split);
        let value: f64 = num.parse().map_err(|_| format!("size `{t}` is not a number and a unit, e.g. `2 GB`"))?;
        let scale: f64 = match unit.trim() {
            "B" => 1.0,
            "kB" | "KB" => 1e3,
            "MB" => 1e6,
            "GB" => 1e9,
            "TB" => 1e12,
            "KiB" => 1024.0,
            "MiB" => 1024.0 * 1024.0,
            "GiB" => 1024.0 * 1024.0 * 1024.0,
            "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
            other => {
                return Err(format!("unknown unit `{other}` in `{t}`; use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB"))
            }
        };
        let bytes = value * scale;
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(format!("size `{t}` is too large"));
        }
        Ok(Size(bytes.round() as u64))
    }
}

impl fmt::Debug for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (unit, scale) in [("GB", 1_000_000_000), ("MB", 1_000_000), ("kB", 1000)] {
            if b >= scale && b % scale == 0 {
                return write!(f, "{} {unit}", b / scale);
            }
        }
        write!(f, "{b} B")
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Size::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl JsonSchema for Size {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Size".into()
    }
    fn json_schema(_gen: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*(B|kB|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$",
            "description": "A size with its unit, e.g. `500 MB`, `2 GB`, `1.5 GiB`.",
            "examples": ["500 MB", "2 GB"]
        })
    }
}

// The limits of what a remote command may change in one task: a command must never be able to
// switch inspection off (a threshold of 1 passes every defect; a disabled task stops the line).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskCommandsConfig {
    /// `[low, high]`: the NG thresholds a `set-threshold` command (or a Sparkplug
    /// `Inspection/NG Threshold`) may set, both inside (0, 1). Defaults to the task's NG threshold
    /// ± 0.2, never below 0.05 or above 0.95. Anything outside is refused with the limit.
    #[serde(default)]
    pub threshold: Option<[f64; 2]>,
    /// Whether `disable-task` (a Sparkplug `Inspection/Enabled` = false) is allowed. A disabled task
    /// gives every part ERROR, which the reject gate throws out. Default: refused.
    #[serde(default)]
    pub allow_disable: bool,
}

/// How far a command may move a task's NG threshold from the configured one when the task sets no
/// `commands.threshold`, and the bounds it never leaves.
pub const DEFAULT_THRESHOLD_SPAN: f64 = 0.2;
pub const DEFAULT_THRESHOLD_FLOOR: f64 = 0.05;
pub const DEFAULT_THRESHOLD_CEILING: f64 = 0.95;

fn default_inference_timeout() -> Dur {
    Dur::from_secs(1)
}

// How a model's output becomes OK, NG or UNCERTAIN for one task.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// A part is NG when the model's NG probability (1 minus the sum of the OK classes) reaches this value, in 0..1.
    /// Defaults to the threshold the training script wrote into the model.
    #[serde(default)]
    pub ng_threshold: Option<f64>,
    /// Detectors: a class's own minimum confidence, above `ng_threshold` (which defaults to 0.25 for
    /// detectors), e.g. `{ scratch: 0.6 }`.
    #[serde(default)]
    pub class_min_confidence: std::collections::BTreeMap<String, f64>,
    /// Detectors: boxes smaller than this many square pixels do not count.
    #[serde(default)]
    pub min_area: f64,
    /// Detectors: only boxes whose centre lies in `[x1, y1, x2, y2]` (image pixels) count.
    #[serde(default)]
    pub roi: Option<[f64; 4]>,
    /// Detectors: polygon zones, each a list of `[x, y]` corners in image pixels (at least three); when
    /// given, only boxes whose centre lies in one of them count.
    #[serde(default)]
    pub zones: Vec<Vec<[f64; 2]>>,
    /// A band of scores just below `ng_threshold` where the verdict is UNCERTAIN instead of OK, and
    /// what happens to such a part. Without it, every part is OK or NG.
    #[serde(default)]
    pub uncertain: Option<UncertainConfig>,
}

// The band of doubtful scores, and what happens to a part in it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UncertainConfig {
    /// Scores from this value up to (not including) the NG threshold are UNCERTAIN; in 0..1, below the threshold.
    pub from: f64,
    /// `reject` (default), `pass`, or `flag` (pass, marked for review, verdict code 4 in a result block).
    #[serde(default)]
    pub action: UncertainAction,
}

/// What a task does with a part whose verdict is UNCERTAIN.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UncertainAction {
    /// Throw it out like an NG part (the default: nothing doubtful passes).
    #[default]
    Reject,
    /// Let it pass the reject gate; it is counted and reported as UNCERTAIN.
    Pass,
    /// Let it pass the reject gate and mark it for review: the result says `"flagged": true`
    /// and a result block gives the PLC verdict code 4, so the line can divert it.
    Flag,
}

// When and how long the reject gate fires for a rejected part, and how it proves it moved.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectConfig {
    /// The output (a key of `modbus.outputs`) that drives the reject gate.
    pub output: String,
    /// Time from the trigger (or, without one, the frame's capture) to the part's arrival at the gate.
    /// Give `delay` or `distance`.
    #[serde(default)]
    pub delay: Option<Dur>,
    /// Encoder counts from the trigger to the gate (needs `line.encoder`). Give `delay` or `distance`.
    #[serde(default)]
    pub distance: Option<u64>,
    /// How long the gate output stays on.
    pub pulse: Dur,
    /// What the gate does for a part whose verdict is not ready when it arrives. Counted as a deadline miss either way.
    #[serde(default)]
    pub on_deadline_miss: MissAction,
    /// A sensor that confirms the gate acted; a missing confirmation raises an alarm.
    #[serde(default)]
    pub confirm: Option<ConfirmConfig>,
    /// How long the gate is held in reject after an unclean stop (a crash, a kill, a power cut),
    /// from the moment the cameras start again: every part between the camera and the gate was
    /// judged by a process that is gone, or not at all, and none may pass. Default: the gate's
    /// `delay` plus its `pulse`; for a gate placed by `distance`, 10 s (set it to the line's
    /// travel time from the camera to the gate).
    #[serde(default)]
    pub purge: Option<Dur>,
}

// The `runtime` section: the ONNX Runtime library, how many threads inference may use, and
// where the node keeps what must survive a restart.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Path to `libonnxruntime.so`. Without it: the `ORT_DYLIB_PATH` environment variable, else
    /// the packaged `/usr/lib/linesight/libonnxruntime.so*`, else a checkout's `.cache/onnxruntime/`.
    #[serde(default)]
    pub onnxruntime: Option<PathBuf>,
    /// Threads the node may use for inference in all; defaults to the number of cores.
    #[serde(default)]
    pub threads: Option<usize>,
    /// Folder for the node's own state across restarts (the ids of recent remote commands, so a
    /// replayed command is refused); the service's StateDirectory. Created when first needed.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig { onnxruntime: None, threads: None, state_dir: default_state_dir() }
    }
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/linesight")
}

// The `health` section: when the machine's own state becomes an alarm. Alarms, not line faults:
// they do not stop the line or hold outputs safe (a hot or full machine still judges parts, and
// a part it cannot judge in time is rejected anyway); they warn before that happens.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Alarm when a thermal zone (CPU, GPU, SoC) reaches this temperature, in degrees Celsius;
    /// cleared when every zone is 5 degrees below it. Jetsons throttle their clocks near 95-100.
    #[serde(default = "default_temperature_c")]
    pub temperature_c: f64,
    /// Alarm when the file system of `runtime.state_dir` or of the MQTT queue has less free
    /// space than this, in MiB; cleared when it has 10% more than this. 0 turns the alarm off.
    #[serde(default = "default_disk_free_mb")]
    pub disk_free_mb: u64,
    /// Alarm when the memory available (MemAvailable; the Jetson's GPU shares it) falls below
    /// this, in MiB; cleared when it is 10% above this. 0 turns the alarm off.
    #[serde(default = "default_memory_available_mb")]
    pub memory_available_mb: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            temperature_c: default_temperature_c(),
            disk_free_mb: default_disk_free_mb(),
            memory_available_mb: default_memory_available_mb(),
        }
    }
}

fn default_temperature_c() -> f64 {
    85.0
}

fn default_disk_free_mb() -> u64 {
    200
}

fn default_memory_available_mb() -> u64 {
    256
}

/// A duration written with its unit: `80ms`, `1.5s`, `2m`, `250us`.
///
/// A bare number is refused on purpose: `delay: 350` could be milliseconds or
/// seconds, and a wrong guess fires the reject gate at the wrong part.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn from_millis(ms: u64) -> Self {
        Dur(Duration::from_millis(ms))
    }
    pub const fn from_secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }
    pub fn get(self) -> Duration {
        self.0
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("`{t}` has no unit; write it with one, e.g. `{t}ms` or `{t}s`"))?;
        let (num, unit) = t.split_at(split);
        let value: f64 =
            num.parse().map_err(|_| format!("`{t}` is not a duration; write a number and a unit, e.g. `80ms`"))?;
        let scale = match unit.trim() {
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            other => return Err(format!("unknown unit `{other}` in `{t}`; use us, ms, s, m or h")),
        };
        let secs = value * scale;
        if !secs.is_finite() || secs > 1e9 {
            return Err(format!("`{t}` is too long"));
        }
        Ok(Dur(Duration::from_secs_f64(secs)))
    }
}

impl fmt::Debug for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.0.as_micros();
        if us % 1_000_000 == 0 {
            write!(f, "{}s", us / 1_000_000)
        } else if us % 1000 == 0 {
            write!(f, "{}ms", us / 1000)
        } else {
            write!(f, "{us}us")
        }
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Dur::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl JsonSchema for Dur {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_gen: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*(us|µs|ms|s|m|min|h)\s*$",
            "description": "A duration with its unit, e.g. `80ms`, `1.5s`, `2m`.",
            "examples": ["80ms", "1.5s"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_broker_password() {
        let mut m = MqttConfig::new("broker", 1883);
        m.username = Some("cell-07".into());
        m.password = Some("hunter2-s3cret".into());
        let shown = format!("{m:?} {m:#?}");
        assert!(!shown.contains("hunter2-s3cret"), "{shown}");
        assert!(shown.contains("cell-07") && shown.contains("***"), "{shown}");
    }

    #[test]
    fn durations_need_units() {
        assert_eq!(Dur::parse("80ms").unwrap().get(), Duration::from_millis(80));
        assert_eq!(Dur::parse("1.5s").unwrap().get(), Duration::from_millis(1500));
        assert_eq!(Dur::parse("250us").unwrap().get(), Duration::from_micros(250));
        assert!(Dur::parse("350").unwrap_err().contains("no unit"));
        assert!(Dur::parse("3 furlongs").unwrap_err().contains("unknown unit"));
        assert!(Dur::parse("ms").is_err());
        assert_eq!(Dur::from_millis(80).to_string(), "80ms");
        assert_eq!(Dur::from_secs(2).to_string(), "2s");
    }

    #[test]
    fn sizes_need_units() {
        assert_eq!(Size::parse("2 GB").unwrap().get(), 2_000_000_000);
        assert_eq!(Size::parse("1.5GiB").unwrap().get(), 1_610_612_736);
        assert_eq!(Size::parse("64 KiB").unwrap().get(), 65_536);
        assert!(Size::parse("2048").unwrap_err().contains("no unit"));
        assert!(Size::parse("2 parsecs").unwrap_err().contains("unknown unit"));
        assert_eq!(Size(2_000_000_000).to_string(), "2 GB");
        assert_eq!(Size::parse(&Size(1234).to_string()).unwrap(), Size(1234));
    }
}

// The `rollout` section: signed model packages (docs/rollout.md). Without trusted keys every
// package is refused.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutConfig {
    /// Public keys whose packages this node installs. Keep the secret keys off the node.
    #[serde(default)]
    pub trusted_keys: Vec<TrustedKeyConfig>,
    /// The drop folder packages are installed from. Default: `<runtime.state_dir>/incoming`.
    #[serde(default)]
    pub incoming: Option<PathBuf>,
    /// When a promoted model is rolled back by itself.
    #[serde(default)]
    pub health: RolloutHealthConfig,
    /// A candidate model running beside production on the same frames.
    #[serde(default)]
    pub shadow: ShadowConfig,
}

// One trusted package-signing key: its hex text or its `.pub` file, and a name for the logs.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrustedKeyConfig {
    /// Named in every install it signed (who packed it: a person, a team, a build server).
    pub name: String,
    /// The Ed25519 public key, 64 hex digits (the `.pub` file's content).
    #[serde(default)]
    pub public_key: Option<String>,
    /// Or the `.pub` file `linesight model keygen` wrote.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

// The checks after a promote: a bad model is rolled back before it does much harm.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutHealthConfig {
    /// Parts judged by a newly promoted model under watch.
    #[serde(default = "default_first_parts")]
    pub first_parts: u32,
    /// Share of ERROR verdicts among those parts above which it is rolled back (0 to 1).
    #[serde(default = "default_max_error_rate")]
    pub max_error_rate: f64,
}

impl Default for RolloutHealthConfig {
    fn default() -> Self {
        RolloutHealthConfig { first_parts: default_first_parts(), max_error_rate: default_max_error_rate() }
    }
}

fn default_first_parts() -> u32 {
    200
}

fn default_max_error_rate() -> f64 {
    0.05
}

// Shadow mode: the candidate never delays production.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    /// Frames waiting for the candidate; when full, the candidate skips frames (counted).
    #[serde(default = "default_shadow_queue")]
    pub queue: usize,
}

impl Default for ShadowConfig {
    fn default() -> Self {
        ShadowConfig { queue: default_shadow_queue() }
    }
}

fn default_shadow_queue() -> usize {
    2
}
