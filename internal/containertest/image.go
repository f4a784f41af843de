package containertest

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"runtime"
	"slices"
	"time"
)

// Image is a container image made of one layer holding a static busybox.
type Image struct {
	Name       string // full reference: "localhost/twtrace/busybox:test"
	Entrypoint []string
	Cmd        []string
}

// OCI media types (image-spec v1.0).
const (
	mediaManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaConfig   = "application/vnd.oci.image.config.v1+json"
	mediaLayer    = "application/vnd.oci.image.layer.v1.tar"
)

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int               `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

// WriteImageArchive writes the images, built on the static busybox at
// the given path, as one OCI image layout in a tar stream (what `ctr
// images import` reads). The images share their layer; each is named by
// the io.containerd.image.name annotation, so the import needs no
// --base-name.
func WriteImageArchive(w io.Writer, busybox string, images ...Image) error {
	layer, err := busyboxLayer(busybox)
	if err != nil {
		return fmt.Errorf("building the busybox layer: %w", err)
	}
	blobs := map[string][]byte{}
	add := func(mediaType string, data []byte) descriptor {
		sum := sha256.Sum256(data)
		digest := "sha256:" + hex.EncodeToString(sum[:])
		blobs[digest] = data
		return descriptor{MediaType: mediaType, Digest: digest, Size: len(data)}
	}
	layerDesc := add(mediaLayer, layer)
	index := struct {
		SchemaVersion int          `json:"schemaVersion"`
		Manifests     []descriptor `json:"manifests"`
	}{SchemaVersion: 2}
	for _, img := range images {
		config, _ := json.Marshal(map[string]any{
			"architecture": runtime.GOARCH,
			"os":           "linux",
			"config":       map[string]any{"Entrypoint": img.Entrypoint, "Cmd": img.Cmd, "Env": []string{"PATH=/bin"}},
			"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{layerDesc.Digest}},
		})
		manifest, _ := json.Marshal(map[string]any{
			"schemaVersion": 2,
			"mediaType":     mediaManifest,
			"config":        add(mediaConfig, config),
			"layers":        []descriptor{layerDesc},
		})
		d := add(mediaManifest, manifest)
		d.Annotations = map[string]string{"io.containerd.image.name": img.Name}
		d.Platform = &platform{Architecture: runtime.GOARCH, OS: "linux"}
		index.Manifests = append(index.Manifests, d)
	}
	indexJSON, _ := json.Marshal(index)

	tw := tar.NewWriter(w)
	files := []struct {
		name string
		data []byte
	}{{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)}, {"index.json", indexJSON}}
	for _, digest := range slices.Sorted(maps.Keys(blobs)) {
		files = append(files, struct {
			name string
			data []byte
		}{"blobs/sha256/" + digest[len("sha256:"):], blobs[digest]})
	}
	for _, f := range files {
		if err := writeTarFile(tw, f.name, 0o644, f.data); err != nil {
			return err
		}
	}
	return tw.Close()
}

// busyboxLayer is the root file system Bundle writes, as a layer tar.
func busyboxLayer(busybox string) ([]byte, error) {
	bin, err := os.ReadFile(busybox)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range []string{"bin/", "dev/", "etc/", "proc/", "sys/", "tmp/"} {
		mode := int64(0o755)
		if d == "tmp/" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: mode, ModTime: epoch}); err != nil {
			return nil, err
		}
	}
	if err := writeTarFile(tw, "bin/busybox", 0o755, bin); err != nil {
		return nil, err
	}
	for _, a := range applets {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777, ModTime: epoch}); err != nil {
			return nil, err
		}
	}
	if err := writeTarFile(tw, "etc/hosts", 0o644, []byte(etcHosts)); err != nil {
		return nil, err
	}
	err = tw.Close()
	return buf.Bytes(), err
}

// epoch dates every file, so the same busybox gives the same layer digest.
var epoch = time.Unix(0, 0)

func writeTarFile(tw *tar.Writer, name string, mode int64, data []byte) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: epoch}); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}
