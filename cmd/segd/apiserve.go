package main

import (
	"github.com/rs/zerolog"

	"github.com/segd/segd/api"
	"github.com/segd/segd/engine"
)

// startAPI serves eng's HTTP API on api.addr beside the engine (nothing
// with api.addr off: a nil server and a no-op stop). stop ends it.
func startAPI(eng *engine.Engine, cfg *engine.Config, log zerolog.Logger) (srv *api.Server, stop func(), err error) {
	if cfg.API.Addr == "off" {
		return nil, func() {}, nil
	}
	if srv, err = api.New(eng, &cfg.API, log); err != nil {
		return nil, nil, err
	}
	if _, stop, err = srv.Listen(); err != nil {
		return nil, nil, err
	}
	return srv, stop, nil
}
