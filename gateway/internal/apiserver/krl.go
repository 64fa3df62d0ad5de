package apiserver

import "net/http"

func (s *Server) routeKRL(mux *http.ServeMux) {}
