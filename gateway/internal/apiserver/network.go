package apiserver

import "net/http"

func (s *Server) routeNetwork(mux *http.ServeMux) {}
