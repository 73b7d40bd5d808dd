/* NBD export ACL by peer uid: see storaged-acl.h. */
#include "storaged-acl.h"

#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"
#include "util.h"

bool storaged_acl_allows(const char *acl_path, const struct ucred *peer, const char *export)
{
	char name[HUTCH_NAME_MAX + 2], line[512];
	const char *snap;
	_cleanup_fclose_ FILE *f = NULL;

	struct group gr, *grp = NULL;
	char grbuf[4096];

	if (!peer || peer->uid == (uid_t)-1 || peer->uid == 0 || peer->uid == getuid())
		return true;
	/* Admins in group hutch (as for the control socket). */
	if (getgrnam_r("hutch", &gr, grbuf, sizeof grbuf, &grp) == 0 && grp && grp->gr_gid == peer->gid)
		return true;
	if (!ref_split(export, name, sizeof name, &snap))
		snprintf(name, sizeof name, "%s", export);
	f = fopen(acl_path, "re");
	if (!f)
		return false;	/* no ACL: nobody but root */
	while (fgets(line, sizeof line, f)) {
		char who[32], what[HUTCH_NAME_MAX + 2];
		unsigned long uid;
		char *end;

		if (line[0] == '#' || sscanf(line, "%31s %129s", who, what) != 2)
			continue;
		uid = strtoul(who, &end, 10);
		if (*end || uid != (unsigned long)peer->uid)
			continue;
		if (strcmp(what, name) == 0)
			return true;
	}
	return false;
}
