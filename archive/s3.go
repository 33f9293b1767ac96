package archive

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/cairn-dev/cairn"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"
)

// S3Config configures an S3 store. Endpoint and Bucket are required.
type S3Config struct {
	// Endpoint is the URL of the S3 API, scheme included:
	// "https://s3.us-east-1.amazonaws.com",
	// "https://ACCOUNT.r2.cloudflarestorage.com", "http://127.0.0.1:8333".
	// http:// sends credentials and data in the clear: use it on loopback
	// or a private network only.
	Endpoint string
	// Bucket holds the blobs.
	Bucket string
	// Prefix, if set, is a valid key (see CheckKey) of at most MaxPrefix
	// bytes under which every blob is stored: key k is object Prefix+"/"+k. Several cairn
	// deployments can share a bucket with different prefixes.
	Prefix string
	// Region of the bucket, such as "us-east-1"; "auto" for R2. Empty
	// lets the client ask the server.
	Region string
	// AccessKey and SecretKey are the credentials (AWS signature V4).
	// Both empty sends anonymous requests.
	AccessKey string
	SecretKey string
	// InsecureSkipVerify accepts any TLS certificate of an https
	// endpoint (self-signed test servers). Never in production.
	InsecureSkipVerify bool
	// PathStyle sends requests as ENDPOINT/BUCKET/KEY instead of
	// BUCKET.ENDPOINT/KEY. Self-hosted servers (SeaweedFS, MinIO, Ceph)
	// usually need it; AWS and R2 accept both.
	PathStyle bool
	// CreateBucket makes the bucket if it does not exist. Without it a
	// missing bucket fails NewS3. Nothing else is ever created implicitly.
	CreateBucket bool
}

// MaxPrefix is the longest S3Config.Prefix, in bytes: with a key of
// MaxKey bytes, an object name stays under S3's limit of 1,024.
const MaxPrefix = 256

// S3 is a Store on an S3-compatible object store, through minio-go. The
// blob under key k is the object Prefix/k of the bucket; objects under the
// prefix whose names are not keys are ignored by List and Usage.
//
// Every blob is one PUT request (no multipart upload, so a blob appears
// whole or not at all, and its ETag is the MD5 of its bytes on servers
// that follow S3 there).
type S3 struct {
	client *minio.Client
	core   minio.Core // the same client, for single-request GETs
	bucket string
	prefix string // "" or Prefix+"/"
}

// NewS3 checks cfg, connects, and checks that the bucket exists (creating
// it if cfg.CreateBucket). It returns a *cairn.Error of code Invalid for a
// malformed cfg and NotFound for a missing bucket, and an error wrapping
// the server's answer when the endpoint is unreachable or the credentials
// are refused. The S3 holds idle HTTP connections only; it needs no Close.
func NewS3(ctx context.Context, cfg S3Config) (*S3, error) {
	u, err := url.Parse(cfg.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return nil, cairn.Errorf(cairn.Invalid, "archive s3 endpoint %q is not http(s)://host[:port]", cfg.Endpoint)
	}
	if err := s3utils.CheckValidBucketName(cfg.Bucket); err != nil {
		return nil, cairn.Errorf(cairn.Invalid, "archive s3 bucket %q: %s", cfg.Bucket, err.Error())
	}
	if cfg.Prefix != "" {
		if err := CheckKey(cfg.Prefix); err != nil || len(cfg.Prefix) > MaxPrefix {
			return nil, cairn.Errorf(cairn.Invalid, "archive s3 prefix %q: must be a valid key (lowercase segments separated by '/')", cfg.Prefix)
		}
	}
	if (cfg.AccessKey == "") != (cfg.SecretKey == "") {
		return nil, cairn.Errorf(cairn.Invalid, "archive s3: set both the access key and the secret key, or neither")
	}
	secure := u.Scheme == "https"
	transport, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, fmt.Errorf("archive s3 transport: %w", err)
	}
	if cfg.InsecureSkipVerify {
		if transport.TLSClientConfig == nil {
			transport.TLSClientConfig = &tls.Config{}
		}
		transport.TLSClientConfig.InsecureSkipVerify = true
	}
	lookup := minio.BucketLookupAuto
	if cfg.PathStyle {
		lookup = minio.BucketLookupPath
	}
	client, err := minio.New(u.Host, &minio.Options{
		Creds:        credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:       secure,
		Transport:    transport,
		Region:       cfg.Region,
		BucketLookup: lookup,
	})
	if err != nil {
		return nil, cairn.Errorf(cairn.Invalid, "archive s3: %s", err.Error())
	}
	s := &S3{client: client, core: minio.Core{Client: client}, bucket: cfg.Bucket}
	if cfg.Prefix != "" {
		s.prefix = cfg.Prefix + "/"
	}
	ok, err := client.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		return nil, s.wrap(ctx, "open bucket", cfg.Bucket, err)
	}
	if !ok {
		if !cfg.CreateBucket {
			return nil, cairn.Errorf(cairn.NotFound, "archive s3 bucket %s does not exist", cfg.Bucket)
		}
		err := client.MakeBucket(ctx, cfg.Bucket, minio.MakeBucketOptions{Region: cfg.Region})
		if code := minio.ToErrorResponse(err).Code; err != nil && code != minio.BucketAlreadyOwnedByYou {
			return nil, s.wrap(ctx, "create bucket", cfg.Bucket, err)
		}
	}
	return s, nil
}

// wrap returns err wrapped with the operation and key, with ctx's error
// in the chain when ctx ended (minio-go does not always keep it).
func (s *S3) wrap(ctx context.Context, op, key string, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("archive %s %s: %w (%v)", op, key, cerr, err)
	}
	return fmt.Errorf("archive %s %s: %w", op, key, err)
}

// Put implements Store.Put. The PUT carries Content-MD5, so the server
// refuses a body damaged on the way. Durable means: the server answered
// the PUT with the MD5 of data as ETag (what it computed over the bytes
// it stored), and a HEAD afterwards finds the object. Where the PUT's
// ETag is not an MD5, the HEAD's must be, with the size of data; where
// neither is (AWS with SSE-KMS or SSE-C), Put reads the blob back and
// compares bytes. How many
// copies exist when the server answers is the server's business: AWS S3
// and R2 store redundantly before answering; SeaweedFS as configured
// (replication, fsync; see docs/archive.md).
func (s *S3) Put(ctx context.Context, key string, data []byte) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	if len(data) > MaxBlob {
		return tooLarge(key, len(data))
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("archive put %s: %w", key, err)
	}
	sum := md5.Sum(data)
	md5hex := hex.EncodeToString(sum[:])
	name := s.prefix + key
	up, err := s.client.PutObject(ctx, s.bucket, name, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{
		ContentType:      "application/octet-stream",
		SendContentMd5:   true,
		DisableMultipart: true,
		// Over http, minio-go signs the payload in aws-chunked streaming
		// form, which it sends without a Content-Length when the body is
		// empty, and servers refuse that. An empty body has nothing to
		// sign.
		DisableContentSha256: len(data) == 0,
	})
	if err != nil {
		return s.wrap(ctx, "put", key, err)
	}
	// The PUT's ETag is the MD5 of what the server stored for this
	// request, on servers that follow S3 there.
	putTag := normETag(up.ETag)
	if isMD5(putTag) && putTag != md5hex {
		return fmt.Errorf("archive put %s: verify: server ETag %s is not the MD5 of the data sent", key, putTag)
	}
	// The HEAD shows that the blob is visible to readers. A concurrent
	// Put of the same key may have replaced it since: then its ETag and
	// size are another's, which is fine when the PUT's ETag proved ours.
	info, err := s.client.StatObject(ctx, s.bucket, name, minio.StatObjectOptions{})
	if err != nil {
		return s.wrap(ctx, "put: verify", key, err)
	}
	if putTag == md5hex {
		return nil
	}
	if headTag := normETag(info.ETag); isMD5(headTag) {
		if headTag != md5hex || info.Size != int64(len(data)) {
			return fmt.Errorf("archive put %s: verify: server holds %d bytes with ETag %s, sent %d with MD5 %s", key, info.Size, headTag, len(data), md5hex)
		}
		return nil
	}
	// No MD5 in sight (AWS with SSE-KMS or SSE-C): compare bytes.
	back, err := s.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("archive put %s: verify: %w", key, err)
	}
	if !bytes.Equal(back, data) {
		return fmt.Errorf("archive put %s: verify: blob read back differs from the data sent", key)
	}
	return nil
}

func normETag(etag string) string { return strings.ToLower(strings.Trim(etag, `"`)) }

// isMD5 reports whether an ETag is 32 hex digits (not a multipart or
// encrypted-object ETag).
func isMD5(etag string) bool {
	if len(etag) != 32 {
		return false
	}
	_, err := hex.DecodeString(etag)
	return err == nil
}

// Get implements Store.Get.
func (s *S3) Get(ctx context.Context, key string) ([]byte, error) {
	if err := check(ctx, "get", key, CheckKey); err != nil {
		return nil, err
	}
	// One GET, so that the bytes and the size are of one version of the
	// blob even while a Put replaces it (minio-go's Object would send
	// more requests and fail with PreconditionFailed then).
	body, info, _, err := s.core.GetObject(ctx, s.bucket, s.prefix+key, minio.GetObjectOptions{})
	if err != nil {
		return nil, s.getError(ctx, key, err)
	}
	defer body.Close()
	if info.Size < 0 || info.Size > MaxBlob {
		return nil, fmt.Errorf("archive get %s: object has %d bytes, want 0 to %d", key, info.Size, MaxBlob)
	}
	data := make([]byte, info.Size)
	if _, err := io.ReadFull(body, data); err != nil {
		return nil, s.getError(ctx, key, err)
	}
	return data, nil
}

func (s *S3) getError(ctx context.Context, key string, err error) error {
	resp := minio.ToErrorResponse(err)
	if resp.Code == minio.NoSuchKey || resp.StatusCode == http.StatusNotFound && resp.Code != minio.NoSuchBucket {
		return notFound(key)
	}
	return s.wrap(ctx, "get", key, err)
}

// Delete implements Store.Delete.
func (s *S3) Delete(ctx context.Context, key string) error {
	if err := check(ctx, "delete", key, CheckKey); err != nil {
		return err
	}
	err := s.client.RemoveObject(ctx, s.bucket, s.prefix+key, minio.RemoveObjectOptions{})
	if err != nil && minio.ToErrorResponse(err).Code != minio.NoSuchKey {
		return s.wrap(ctx, "delete", key, err)
	}
	return nil
}

// List implements Store.List.
func (s *S3) List(ctx context.Context, prefix string) ([]string, error) {
	return list(ctx, s.walk, prefix)
}

// Usage implements Store.Usage.
func (s *S3) Usage(ctx context.Context, prefix string) (Usage, error) {
	return usage(ctx, s.walk, prefix)
}

// walk calls fn for each object under prefix whose name is a key.
func (s *S3) walk(ctx context.Context, op, prefix string, fn func(key string, size int64)) error {
	if err := check(ctx, op, prefix, CheckPrefix); err != nil {
		return err
	}
	// Cancelling stops minio-go's listing goroutine if we return early.
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for obj := range s.client.ListObjects(lctx, s.bucket, minio.ListObjectsOptions{
		Prefix:    s.prefix + prefix,
		Recursive: true,
	}) {
		if obj.Err != nil {
			return s.wrap(ctx, op, prefix, obj.Err)
		}
		key, ok := strings.CutPrefix(obj.Key, s.prefix)
		if !ok || CheckKey(key) != nil || !strings.HasPrefix(key, prefix) {
			continue
		}
		fn(key, obj.Size)
	}
	// The channel also closes when ctx ends, without an error.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("archive %s %s: %w", op, prefix, err)
	}
	return nil
}
