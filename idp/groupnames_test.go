package idp

import (
	"slices"
	"testing"
)

func TestGroupNameWarnings(t *testing.T) {
	company := Config{ID: "company", Protocol: OIDC}
	partner := Config{ID: "partner", Protocol: SAML}
	github := Config{ID: "github", Preset: PresetGitHub, AllowedOrganizations: []string{"my-org"}, AllowedTeams: []string{"partner-org/annotators"}}
	ghes := Config{ID: "ghes", Preset: PresetGitHub, BaseURL: "https://github.example.com"}
	hf := Config{ID: "hf", Preset: PresetHuggingFace, AllowedGroups: []string{"cvat-ai"}}
	gitlab := Config{ID: "gitlab", Preset: PresetGitLab}
	selfGitLab := Config{ID: "gitlab", Preset: PresetGitLab, BaseURL: "https://gitlab.example.com"}
	google := Config{ID: "google", Preset: PresetGoogle}
	ldap := Config{ID: "ad", Protocol: LDAP}
	ldapDN := Config{ID: "ad", Protocol: LDAP, AttributeMapping: map[string]string{"group_name": " dn"}}

	const (
		orgAtGitHub = `"cvat-admins" in groups: github (preset github) gives its users' organisations as groups, and anyone can create an organisation of that name; `
		// the README's example: a GitHub organisation named like the company IdP's group
		orgBesideCompany = orgAtGitHub + `write idp == "company" && "cvat-admins" in groups, or name a team (my-org/admins)`
	)
	for _, tc := range []struct {
		name      string
		expr      string
		providers []Config
		want      []string
	}{
		{
			name:      "README: an organisation name beside a company IdP is anyone's at GitHub",
			expr:      `"cvat-admins" in groups`,
			providers: []Config{company, github},
			want:      []string{orgBesideCompany},
		},
		{
			name:      "README: the same name for the company IdP only is no warning",
			expr:      `idp == "company" && "cvat-admins" in groups`,
			providers: []Config{company, github},
		},
		{
			name:      "the IdP named after the group, in a longer chain of &&, with and",
			expr:      `"cvat-admins" in groups and email_verified && "company" == idp`,
			providers: []Config{company, github},
		},
		{
			name:      "an organisation name at GitHub alone: name a team",
			expr:      `"cvat-admins" in groups`,
			providers: []Config{github},
			want:      []string{orgAtGitHub + `name a team (my-org/admins)`},
		},
		{
			name:      "restricted to GitHub, an organisation name is still anyone's",
			expr:      `idp == "github" && "cvat-admins" in groups`,
			providers: []Config{company, github},
			want:      []string{orgAtGitHub + `name a team (my-org/admins)`},
		},
		{
			name:      "an idp test beside the group in an || restricts nothing",
			expr:      `idp == "company" || "cvat-admins" in groups`,
			providers: []Config{company, github},
			want:      []string{orgBesideCompany},
		},
		{
			name:      "a team name at GitHub alone is no warning",
			expr:      `"my-org/admins" in groups`,
			providers: []Config{github},
		},
		{
			name:      "an organisation the entry admits by is taken as the operator's",
			expr:      `"my-org" in groups || "partner-org" in groups`,
			providers: []Config{github},
		},
		{
			// GitHub's organisation names are case-insensitive: My-Org is my-org.
			name:      "an organisation the entry admits by is the operator's in any case",
			expr:      `"MY-ORG" in groups`,
			providers: []Config{github},
		},
		{
			name:      "the operator's organisation is still a name another IdP can give",
			expr:      `"my-org" in groups`,
			providers: []Config{company, github},
			want:      []string{`"my-org" in groups: company (OIDC) and github (preset github) can each give a group of that name, and this admits whoever any of them gives it to; name the one that should, as in idp == "github" && "my-org" in groups`},
		},
		{
			name:      "a GitHub organisation in allowed_groups may be a group mistaken for one",
			expr:      `"cvat-admins" in groups`,
			providers: []Config{{ID: "github", Preset: PresetGitHub, AllowedGroups: []string{"cvat-admins"}}},
			want:      []string{orgAtGitHub + `name a team (my-org/admins)`},
		},
		{
			name:      "GitHub Enterprise Server's organisations are its administrators' business",
			expr:      `"cvat-admins" in groups`,
			providers: []Config{ghes},
		},
		{
			name:      "a team name that another IdP can give as well",
			expr:      `"my-org/admins" in groups`,
			providers: []Config{company, github},
			want:      []string{`"my-org/admins" in groups: company (OIDC) and github (preset github) can each give a group of that name, and this admits whoever any of them gives it to; name the one that should, as in idp == "github" && "my-org/admins" in groups`},
		},
		{
			name:      "a team name that Hugging Face cannot give",
			expr:      `"my-org/admins" in groups`,
			providers: []Config{hf, github},
		},
		{
			name:      "a DN that GitHub cannot give",
			expr:      `"CN=CVAT Admins,CN=Users,DC=ad,DC=example,DC=com" in groups`,
			providers: []Config{ldap, github},
		},
		{
			name:      "Hugging Face: the organisation allowed_groups admits by (docs/idp/huggingface.md)",
			expr:      `"cvat-ai" in groups`,
			providers: []Config{hf},
		},
		{
			name:      "Hugging Face: any other organisation",
			expr:      `"cvat-admins" in groups`,
			providers: []Config{hf},
			want:      []string{`"cvat-admins" in groups: hf (preset huggingface) gives its users' organisations as groups, and anyone can create an organisation of that name; make sure that organisation is yours (check takes one the entry names in allowed_groups as yours)`},
		},
		{
			name:      "gitlab.com: a top-level group is anyone's",
			expr:      `"cvat-admins" in groups`,
			providers: []Config{gitlab},
			want:      []string{`"cvat-admins" in groups: gitlab (preset gitlab) gives its users' groups by path, where a top-level group's is its bare name, and anyone can create a top-level group of that name; name a subgroup (my-group/admins) with claims: {groups: groups_direct}, since groups lists every member of my-group in all its subgroups`},
		},
		{
			name:      "gitlab.com: a subgroup is its group's owners'",
			expr:      `"acme/cvat-admins" in groups`,
			providers: []Config{gitlab},
		},
		{
			name:      "self-managed GitLab's groups are its administrators' business",
			expr:      `"cvat-admins" in groups`,
			providers: []Config{selfGitLab},
		},
		{
			name:      "one OIDC IdP with plain group names is no warning",
			expr:      `"cvat-admins" in groups`,
			providers: []Config{company},
		},
		{
			name:      "Google gives no groups",
			expr:      `"cvat-admins" in groups`,
			providers: []Config{company, google},
		},
		{
			name:      "two IdPs that name their own groups, neither named",
			expr:      `"cvat-admins" in groups`,
			providers: []Config{company, partner},
			want:      []string{`"cvat-admins" in groups: company (OIDC) and partner (SAML) can each give a group of that name, and this admits whoever any of them gives it to; name the one that should, as in idp == "company" && "cvat-admins" in groups`},
		},
		{
			name:      "idp in a list leaves those in it",
			expr:      `idp in ["company", "github"] && "cvat-admins" in groups`,
			providers: []Config{partner, company, github},
			want:      []string{orgBesideCompany},
		},
		{
			name:      "idp in a list of IdPs that name their own groups: the condition names the ones it means",
			expr:      `idp in ["company", "partner"] && "cvat-admins" in groups`,
			providers: []Config{company, partner, github},
		},
		{
			name:      "an LDAP entry with group_name dn gives DNs only, not a plain name",
			expr:      `"cvat-admins" in groups`,
			providers: []Config{company, ldapDN},
		},
		{
			name:      "a DN that an LDAP entry with group_name dn gives is named as its",
			expr:      `"CN=cvat-admins,OU=Groups,DC=example,DC=com" in groups`,
			providers: []Config{company, ldapDN},
			want:      []string{`"CN=cvat-admins,OU=Groups,DC=example,DC=com" in groups: company (OIDC) and ad (LDAP) can each give a group of that name, and this admits whoever any of them gives it to; name the one that should, as in idp == "ad" && "CN=cvat-admins,OU=Groups,DC=example,DC=com" in groups`},
		},
		{
			name:      "any(groups, # == name)",
			expr:      `any(groups, {# == "cvat-admins"}) && email_verified`,
			providers: []Config{company, github},
			want:      []string{orgBesideCompany},
		},
		{
			name:      "any(groups, # in [...]) names each",
			expr:      `any(groups, "my-org/admins" == # || # in ["cvat-admins"])`,
			providers: []Config{github},
			want:      []string{orgAtGitHub + `name a team (my-org/admins)`},
		},
		{
			name:      "one(groups, # == name) is followed like any",
			expr:      `one(groups, {# == "cvat-admins"})`,
			providers: []Config{company, github},
			want:      []string{orgBesideCompany},
		},
		{
			name:      "a name tested twice is one warning",
			expr:      `"cvat-admins" in groups || any(groups, # == "cvat-admins")`,
			providers: []Config{github},
			want:      []string{orgAtGitHub + `name a team (my-org/admins)`},
		},
		{
			name:      "each side of an ||, with its own idp",
			expr:      `(idp == "company" && "cvat-admins" in groups) || (idp == "github" && "my-org/admins" in groups)`,
			providers: []Config{company, github},
		},
		{
			name:      "$env.idp is idp",
			expr:      `$env.idp == "company" && "cvat-admins" in $env.groups`,
			providers: []Config{company, github},
		},
		{
			name:      "a group the user must not be in admits nobody by it",
			expr:      `!("cvat-admins" in groups) && not ("cvat-ops" in groups) && "cvat-x" not in groups`,
			providers: []Config{company, github},
		},
		{
			name:      "idp read in a way not followed: no warning rather than a wrong one",
			expr:      `idp != "github" && "cvat-admins" in groups`,
			providers: []Config{company, github},
		},
		{
			name:      "idp inside a loop: no warning rather than a wrong one",
			expr:      `"cvat-admins" in groups && any(["company"], # == idp)`,
			providers: []Config{company, github},
		},
		{
			name:      "an expression that does not parse",
			expr:      `"cvat-admins" in (groups`,
			providers: []Config{company, github},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := GroupNameWarnings(tc.expr, tc.providers)
			if !slices.Equal(got, tc.want) {
				t.Errorf("GroupNameWarnings(%s)\n got: %q\nwant: %q", tc.expr, got, tc.want)
			}
		})
	}
}
