package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// imageSpec is one single-layer image: files copied from the host into a
// scratch root file system.
type imageSpec struct {
	ref        string
	entrypoint []string
	cmd        []string
	user       string
	files      map[string]string // path in the image -> path on the host
}

func imageMain(args []string) error {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	ref := fs.String("ref", "", "full image reference, e.g. registry.k8s.io/pause:3.10.1")
	out := fs.String("out", "", "archive to write (OCI layout tar)")
	entrypoint := fs.String("entrypoint", "", "entrypoint path in the image")
	user := fs.String("user", "", "user the image runs as (uid[:gid])")
	var cmd, add stringList
	fs.Var(&cmd, "cmd", "default argument (repeatable)")
	fs.Var(&add, "add", "DEST=SRC: copy host file SRC to DEST in the image (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *ref == "" || *out == "" || len(add) == 0 {
		return errors.New("--ref, --out and at least one --add are required")
	}
	spec := imageSpec{ref: *ref, cmd: cmd, user: *user, files: map[string]string{}}
	if *entrypoint != "" {
		spec.entrypoint = []string{*entrypoint}
	}
	for _, a := range add {
		dest, src, ok := strings.Cut(a, "=")
		if !ok || !path.IsAbs(dest) {
			return fmt.Errorf("--add %q: want /ABSOLUTE/DEST=SRC", a)
		}
		spec.files[path.Clean(dest)] = src
	}
	return writeImage(spec, *out)
}

// layerTar builds the single layer: every parent folder, then each file,
// owned by root, with a fixed time so that the same inputs give the same digest.
func layerTar(files map[string]string) ([]byte, error) {
	epoch := time.Unix(0, 0)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dests := make([]string, 0, len(files))
	for d := range files {
		dests = append(dests, d)
	}
	sort.Strings(dests)
	dirs := map[string]bool{}
	for _, dest := range dests {
		var parents []string
		for p := path.Dir(dest); p != "/"; p = path.Dir(p) {
			parents = append([]string{p}, parents...)
		}
		for _, p := range parents {
			if dirs[p] {
				continue
			}
			dirs[p] = true
			hdr := &tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(p, "/") + "/", Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}
			if err := tw.WriteHeader(hdr); err != nil {
				return nil, err
			}
		}
		src := files[dest]
		info, err := os.Stat(src)
		if err != nil {
			return nil, err
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(dest, "/"), Mode: int64(info.Mode().Perm()), Size: info.Size(), ModTime: epoch, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		f, err := os.Open(src)
		if err != nil {
			return nil, err
		}
		_, err = io.Copy(tw, f)
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    map[string]string `json:"platform,omitempty"`
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func writeImage(spec imageSpec, out string) error {
	layer, err := layerTar(spec.files)
	if err != nil {
		return err
	}
	layerDigest := digestOf(layer)
	imgConfig := map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"created":      "1970-01-01T00:00:00Z",
		"config": map[string]any{
			"Entrypoint": spec.entrypoint,
			"Cmd":        spec.cmd,
			"User":       spec.user,
			"Env":        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			"WorkingDir": "/",
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	}
	configJSON, err := json.Marshal(imgConfig)
	if err != nil {
		return err
	}
	manifest := map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        descriptor{MediaType: "application/vnd.oci.image.config.v1+json", Digest: digestOf(configJSON), Size: int64(len(configJSON))},
		"layers":        []descriptor{{MediaType: "application/vnd.oci.image.layer.v1.tar", Digest: layerDigest, Size: int64(len(layer))}},
	}
	manifestJSON, err := json.Marshal(manifest)
	if err != nil {
		return err
	}
	// containerd takes the image name from io.containerd.image.name; other
	// OCI tools read org.opencontainers.image.ref.name. Both carry the full
	// reference so that `ctr images import` needs no --base-name.
	index := map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests": []descriptor{{
			MediaType: "application/vnd.oci.image.manifest.v1+json",
			Digest:    digestOf(manifestJSON),
			Size:      int64(len(manifestJSON)),
			Annotations: map[string]string{
				"io.containerd.image.name":          spec.ref,
				"org.opencontainers.image.ref.name": spec.ref,
			},
			Platform: map[string]string{"architecture": "amd64", "os": "linux"},
		}},
	}
	indexJSON, err := json.Marshal(index)
	if err != nil {
		return err
	}

	entries := []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", indexJSON},
		{"blobs/sha256/" + strings.TrimPrefix(digestOf(configJSON), "sha256:"), configJSON},
		{"blobs/sha256/" + strings.TrimPrefix(digestOf(manifestJSON), "sha256:"), manifestJSON},
		{"blobs/sha256/" + strings.TrimPrefix(layerDigest, "sha256:"), layer},
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), ".image-*.tar")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	tw := tar.NewWriter(tmp)
	epoch := time.Unix(0, 0)
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: epoch}); err != nil {
			return err
		}
	}
	for _, e := range entries {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: e.name, Mode: 0o644, Size: int64(len(e.data)), ModTime: epoch}); err != nil {
			return err
		}
		if _, err := tw.Write(e.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), out)
}
