package api

import (
	"embed"
	"io/fs"
)

//go:embed web
var webFS embed.FS

// webFiles are the page's static files under /ui/; webIndex is served at /.
var (
	webFiles = mustSub(webFS, "web")
	webIndex = mustRead(webFS, "web/index.html")
)

func mustSub(f fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(f, dir)
	if err != nil {
		panic(err) // the directory is embedded at build time
	}
	return sub
}

func mustRead(f fs.FS, name string) []byte {
	b, err := fs.ReadFile(f, name)
	if err != nil {
		panic(err)
	}
	return b
}
