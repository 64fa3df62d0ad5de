package api

import "net/url"

// RoleUpdate is the body of PATCH PathRoles/NAME (RolePath): only the
// fields that are set change, the others keep their values. A list set to
// an empty list is cleared; a MaxTTL of zero means the cluster maximum. The
// answer is the Role as it now is.
type RoleUpdate struct {
	Logins          *[]string `json:"logins,omitempty"`
	MaxTTL          *Duration `json:"max_ttl,omitempty"`
	Admin           *bool     `json:"admin,omitempty"`
	Nodes           *[]string `json:"nodes,omitempty"`
	Services        *[]string `json:"services,omitempty"`
	PortForwarding  *bool     `json:"port_forwarding,omitempty"`
	AgentForwarding *bool     `json:"agent_forwarding,omitempty"`
	Approve         *[]string `json:"approve,omitempty"`
	Sudo            *bool     `json:"sudo,omitempty"`
	Sources         *[]string `json:"sources,omitempty"`
}

// Empty reports whether u changes nothing.
func (u RoleUpdate) Empty() bool {
	return u.Logins == nil && u.MaxTTL == nil && u.Admin == nil && u.Nodes == nil &&
		u.Services == nil && u.PortForwarding == nil && u.AgentForwarding == nil &&
		u.Approve == nil && u.Sudo == nil && u.Sources == nil
}

// UserRolesChange is the body of POST PathUsers/NAME/roles (UserRolesPath):
// the roles to grant the user and the roles to take away. Granting a role
// the user holds, or revoking one they do not, changes nothing; every role
// named must exist. The answer is the User with their roles as they now
// are, which their next login gets.
type UserRolesChange struct {
	Grant  []string `json:"grant,omitempty"`
	Revoke []string `json:"revoke,omitempty"`
}

// RolePath is the path of the role name.
func RolePath(name string) string { return PathRoles + "/" + url.PathEscape(name) }

// UserRolesPath is the path of the roles of the user name.
func UserRolesPath(name string) string { return PathUsers + "/" + url.PathEscape(name) + "/roles" }
