package main

import (
	"context"
	"flag"
	"fmt"
	"net/url"
	"path/filepath"
	"time"

	"github.com/cairn-dev/cairn/agent"
	"github.com/cairn-dev/cairn/archive"
	cairnhttp "github.com/cairn-dev/cairn/http"
	"github.com/prometheus/client_golang/prometheus"
)

// ArchiveConfig is the config file's "archive": where agent sessions' old
// messages and expired sessions go. The default is a local directory,
// <data>/archive; with S3 set, an S3-compatible object store.
type ArchiveConfig struct {
	// Dir is the local archive directory (default <data dir>/archive).
	Dir string `json:"dir"`
	// S3, if its endpoint is set, is used instead of Dir.
	S3 S3ArchiveConfig `json:"s3"`
	// Disabled keeps every message hot and sessions forever.
	Disabled bool `json:"disabled"`
}

// S3ArchiveConfig is an S3-compatible archive. Credentials stay out of
// the file: AccessKeyEnv and SecretKeyEnv name the environment variables
// that hold them.
type S3ArchiveConfig struct {
	Endpoint           string `json:"endpoint"` // https://s3.us-east-1.amazonaws.com, http://127.0.0.1:8333
	Bucket             string `json:"bucket"`
	Prefix             string `json:"prefix"`
	Region             string `json:"region"`
	AccessKeyEnv       string `json:"access_key_env"` // default AWS_ACCESS_KEY_ID
	SecretKeyEnv       string `json:"secret_key_env"` // default AWS_SECRET_ACCESS_KEY
	PathStyle          bool   `json:"path_style"`
	CreateBucket       bool   `json:"create_bucket"`
	InsecureSkipVerify bool   `json:"insecure_skip_verify"`
}

// archiveFlags are the archive's flags, applied over the file and the
// environment by apply.
type archiveFlags struct {
	dir, endpoint, bucket, prefix, region *string
	pathStyle                             *bool
}

func addArchiveFlags(fs *flag.FlagSet) *archiveFlags {
	return &archiveFlags{
		dir:       fs.String("archive-dir", "", "local archive of agent sessions' old messages (env CAIRN_ARCHIVE_DIR; default DATA/archive)"),
		endpoint:  fs.String("archive-s3-endpoint", "", "archive to this S3-compatible endpoint URL instead (env CAIRN_ARCHIVE_S3_ENDPOINT; keys in AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"),
		bucket:    fs.String("archive-s3-bucket", "", "the S3 archive's bucket (env CAIRN_ARCHIVE_S3_BUCKET)"),
		prefix:    fs.String("archive-s3-prefix", "", "the S3 archive's key prefix (env CAIRN_ARCHIVE_S3_PREFIX)"),
		region:    fs.String("archive-s3-region", "", "the S3 archive's region (env CAIRN_ARCHIVE_S3_REGION)"),
		pathStyle: fs.Bool("archive-s3-path-style", false, "path-style S3 requests (most self-hosted servers)"),
	}
}

// apply sets cfg.Archive from the environment, then the flags that were
// set.
func (af *archiveFlags) apply(m *Main, cfg *Config, set map[string]bool) {
	a := &cfg.Archive
	for name, dst := range map[string]*string{
		"CAIRN_ARCHIVE_DIR": &a.Dir, "CAIRN_ARCHIVE_S3_ENDPOINT": &a.S3.Endpoint, "CAIRN_ARCHIVE_S3_BUCKET": &a.S3.Bucket,
		"CAIRN_ARCHIVE_S3_PREFIX": &a.S3.Prefix, "CAIRN_ARCHIVE_S3_REGION": &a.S3.Region,
	} {
		if v := m.Getenv(name); v != "" {
			*dst = v
		}
	}
	for name, pair := range map[string][2]*string{
		"archive-dir": {af.dir, &a.Dir}, "archive-s3-endpoint": {af.endpoint, &a.S3.Endpoint},
		"archive-s3-bucket": {af.bucket, &a.S3.Bucket}, "archive-s3-prefix": {af.prefix, &a.S3.Prefix},
		"archive-s3-region": {af.region, &a.S3.Region},
	} {
		if set[name] {
			*pair[1] = *pair[0]
		}
	}
	if set["archive-s3-path-style"] {
		a.S3.PathStyle = *af.pathStyle
	}
}

// archiveStore opens the configured archive and describes it for the
// start-up banner. It returns nil when the archive is disabled.
func (m *Main) archiveStore(ctx context.Context, cfg ArchiveConfig, dataDir string) (archive.Store, string, error) {
	if cfg.Disabled {
		return nil, "off (every message stays hot; sessions never expire)", nil
	}
	if s3 := cfg.S3; s3.Endpoint != "" {
		ak, sk := s3.AccessKeyEnv, s3.SecretKeyEnv
		if ak == "" {
			ak = "AWS_ACCESS_KEY_ID"
		}
		if sk == "" {
			sk = "AWS_SECRET_ACCESS_KEY"
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		st, err := archive.NewS3(cctx, archive.S3Config{Endpoint: s3.Endpoint, Bucket: s3.Bucket, Prefix: s3.Prefix, Region: s3.Region,
			AccessKey: m.Getenv(ak), SecretKey: m.Getenv(sk), PathStyle: s3.PathStyle, CreateBucket: s3.CreateBucket,
			InsecureSkipVerify: s3.InsecureSkipVerify})
		if err != nil {
			return nil, "", fmt.Errorf("archive: %w", err)
		}
		where := s3.Bucket
		if s3.Prefix != "" {
			where += "/" + s3.Prefix
		}
		host := s3.Endpoint
		if u, err := url.Parse(s3.Endpoint); err == nil {
			host = u.Host
		}
		return st, "s3://" + where + " at " + host, nil
	}
	dir := cfg.Dir
	if dir == "" {
		dir = filepath.Join(dataDir, "archive")
	}
	st, err := archive.NewLocal(dir)
	if err != nil {
		return nil, "", fmt.Errorf("archive: %w", err)
	}
	return st, st.Dir(), nil
}

// agentCollector exports the agents' storage to Prometheus: hot and
// archived bytes from their tallies (one event per agent per scrape), and
// the archive's counters since the server started.
type agentCollector struct {
	svc                   *agent.Service
	hot, archived         *prometheus.Desc
	chunks, msgs, written *prometheus.Desc
	deleted, reads        *prometheus.Desc
	sessions              *prometheus.Desc
}

func newAgentCollector(svc *agent.Service) *agentCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, append([]string{"agent"}, labels...), nil)
	}
	return &agentCollector{
		svc:      svc,
		hot:      d("cairn_agent_hot_bytes", "Bytes of an agent's sessions in their databases (the tally of their reports)."),
		archived: d("cairn_agent_archived_bytes", "Bytes of an agent's sessions in the archive: chunks and manifests (the tally of their reports)."),
		chunks:   d("cairn_agent_archive_chunks_written_total", "Chunks of messages written to the archive."),
		msgs:     d("cairn_agent_archived_messages_total", "Messages moved to the archive."),
		written:  d("cairn_agent_archive_written_bytes_total", "Bytes written to the archive (compressed chunks and manifests)."),
		deleted:  d("cairn_agent_archive_blobs_deleted_total", "Blobs deleted from the archive."),
		sessions: d("cairn_agent_sessions_total", "Sessions expired, restored, discarded (expired and started fresh) and deleted.", "event"),
		reads:    prometheus.NewDesc("cairn_agent_archive_chunk_reads_total", "Chunks read back from the archive (not from the cache).", nil, nil),
	}
}

func (c *agentCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.hot, c.archived, c.chunks, c.msgs, c.written, c.deleted, c.sessions, c.reads} {
		ch <- d
	}
}

func (c *agentCollector) Collect(ch chan<- prometheus.Metric) {
	stats, reads := c.svc.Stats()
	ch <- prometheus.MustNewConstMetric(c.reads, prometheus.CounterValue, float64(reads))
	for _, s := range stats {
		counter := func(d *prometheus.Desc, v int64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append([]string{s.Agent}, labels...)...)
		}
		counter(c.chunks, s.ChunksWritten)
		counter(c.msgs, s.MessagesArchived)
		counter(c.written, s.BytesWritten)
		counter(c.deleted, s.BlobsDeleted)
		counter(c.sessions, s.SessionsExpired, "expired")
		counter(c.sessions, s.SessionsRestored, "restored")
		counter(c.sessions, s.SessionsDiscarded, "discarded")
		counter(c.sessions, s.SessionsDeleted, "deleted")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	us, err := c.svc.Usage(ctx)
	if err != nil {
		return
	}
	for _, u := range us {
		ch <- prometheus.MustNewConstMetric(c.hot, prometheus.GaugeValue, float64(u.HotBytes), u.Agent)
		ch <- prometheus.MustNewConstMetric(c.archived, prometheus.GaugeValue, float64(u.ArchivedBytes), u.Agent)
	}
}

// registerAgentMetrics adds the agents' collector to the server's metrics.
func registerAgentMetrics(m *cairnhttp.Metrics, svc *agent.Service) error {
	return m.Register(newAgentCollector(svc))
}
