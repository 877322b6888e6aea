package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
)

// manifestFileName is read by k8s-manager's bundle module; keep the two in step.
const manifestFileName = "bundle.json"

// spec is what the build script knows and bundletool cannot find out:
// the versions it built and how to ask each executable for its version.
type spec struct {
	Kubernetes  string            `json:"kubernetes"`
	Components  map[string]string `json:"components"`
	Executables []executable      `json:"executables"`
	Images      []image           `json:"images"`
}

type executable struct {
	Path   string   `json:"path"`
	Args   []string `json:"args"`
	Expect string   `json:"expect"`
}

type image struct {
	Path string `json:"path"`
	Ref  string `json:"ref"`
}

type file struct {
	Path       string `json:"path"`
	Sha256     string `json:"sha256"`
	Size       int64  `json:"size"`
	Executable bool   `json:"executable"`
}

type link struct {
	Path   string `json:"path"`
	Target string `json:"target"`
}

type manifest struct {
	SchemaVersion int `json:"schemaVersion"`
	spec
	Files []file `json:"files"`
	Links []link `json:"links"`
}

func sha256File(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func writeManifest(dir string, specIn io.Reader) error {
	var s spec
	dec := json.NewDecoder(specIn)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return fmt.Errorf("reading spec: %w", err)
	}
	m := manifest{SchemaVersion: 1, spec: s, Files: []file{}, Links: []link{}}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		switch {
		case d.IsDir() || rel == manifestFileName:
			return nil
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			m.Links = append(m.Links, link{Path: rel, Target: target})
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			sum, err := sha256File(p)
			if err != nil {
				return err
			}
			m.Files = append(m.Files, file{Path: rel, Sha256: sum, Size: info.Size(), Executable: info.Mode()&0o111 != 0})
		default:
			return fmt.Errorf("%s: not a file, folder or symlink", rel)
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Slice(m.Files, func(i, j int) bool { return m.Files[i].Path < m.Files[j].Path })
	sort.Slice(m.Links, func(i, j int) bool { return m.Links[i].Path < m.Links[j].Path })
	out, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, "."+manifestFileName+".tmp")
	if err := os.WriteFile(tmp, append(out, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, manifestFileName))
}

// checkManifest tells whether a bundle folder is intact: every file listed is
// there with its size and sha256, every link points where it should.
func checkManifest(dir string) error {
	raw, err := os.ReadFile(filepath.Join(dir, manifestFileName))
	if err != nil {
		return err
	}
	var m manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf("%s: %w", manifestFileName, err)
	}
	var problems []error
	for _, f := range m.Files {
		sum, err := sha256File(filepath.Join(dir, f.Path))
		if err != nil {
			problems = append(problems, err)
		} else if sum != f.Sha256 {
			problems = append(problems, fmt.Errorf("%s: sha256 %s, manifest says %s", f.Path, sum, f.Sha256))
		}
	}
	for _, l := range m.Links {
		target, err := os.Readlink(filepath.Join(dir, l.Path))
		if err != nil {
			problems = append(problems, err)
		} else if target != l.Target {
			problems = append(problems, fmt.Errorf("%s: links to %s, manifest says %s", l.Path, target, l.Target))
		}
	}
	return errors.Join(problems...)
}
