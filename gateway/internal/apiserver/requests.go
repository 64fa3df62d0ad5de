package apiserver

import "net/http"

func (s *Server) routeRequests(mux *http.ServeMux) {}
