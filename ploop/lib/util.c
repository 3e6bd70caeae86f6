/* Small parsers shared by the library and the tool: sizes, GUIDs, path joining. */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/random.h>

#include "internal.h"

int ploop_parse_size(const char *s, uint64_t *sectors)
{
	char *end;
	unsigned long long n;
	unsigned shift = 0;

	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	n = strtoull(s, &end, 10);
	if (errno)
		return -EINVAL;
	if (*end) {
		switch (toupper((unsigned char)*end)) {
		case 'K': shift = 10; break;
		case 'M': shift = 20; break;
		case 'G': shift = 30; break;
		case 'T': shift = 40; break;
		default: return -EINVAL;
		}
		end++;
		if (toupper((unsigned char)*end) == 'B' || *end == 'i')
			end++;
		if (*end)
			return -EINVAL;
		if (n > (UINT64_MAX >> shift) - PLOOP_SECTOR_SIZE)
			return -ERANGE;
		/* A byte size that is not a whole sector rounds up. */
		n = ((n << shift) + PLOOP_SECTOR_SIZE - 1) / PLOOP_SECTOR_SIZE;
	}
	*sectors = n;
	return 0;
}

int ploop_parse_guid(const char *s, char out[PLOOP_GUID_BUF])
{
	static const int groups[] = { 8, 4, 4, 4, 12 };
	size_t len = s ? strlen(s) : 0;
	const char *p = s;
	char *o = out;

	if (len == PLOOP_GUID_LEN) {
		if (s[0] != '{' || s[PLOOP_GUID_LEN - 1] != '}')
			return -EINVAL;
		p++;
	} else if (len != PLOOP_GUID_LEN - 2) {
		return -EINVAL;
	}
	*o++ = '{';
	for (size_t g = 0; g < ARRAY_SIZE(groups); g++) {
		if (g) {
			if (*p++ != '-')
				return -EINVAL;
			*o++ = '-';
		}
		for (int i = 0; i < groups[g]; i++, p++) {
			if (!isxdigit((unsigned char)*p))
				return -EINVAL;
			*o++ = (char)tolower((unsigned char)*p);
		}
	}
	*o++ = '}';
	*o = '\0';
	return 0;
}

int ploop_new_guid(char out[PLOOP_GUID_BUF])
{
	uint8_t b[16];

	if (getrandom(b, sizeof(b), 0) != sizeof(b))
		return -EIO;
	b[6] = (b[6] & 0x0f) | 0x40;	/* version 4 */
	b[8] = (b[8] & 0x3f) | 0x80;	/* RFC 4122 variant */
	snprintf(out, PLOOP_GUID_BUF,
		 "{%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x}", b[0], b[1], b[2],
		 b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
	return 0;
}

bool ploop_cluster_size_valid(uint32_t cluster_sectors)
{
	return is_power_of_2(cluster_sectors) && cluster_sectors >= PLOOP_MIN_CLUSTER_SECTORS &&
	       cluster_sectors <= PLOOP_MAX_CLUSTER_SECTORS;
}

char *ploop_dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		return strdup(".");
	if (slash == path)
		return strdup("/");
	return strndup(path, (size_t)(slash - path));
}

char *ploop_join(const char *dir, const char *name)
{
	char *r;

	if (name[0] == '/' || !strcmp(dir, "."))
		return strdup(name);
	if (asprintf(&r, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", name) < 0)
		return NULL;
	return r;
}

#ifndef MS_NOSYMFOLLOW
#define MS_NOSYMFOLLOW 256
#endif

/* mount(8)'s flag options, which mount(2) takes as flags, not in its data string. */
static const struct {
	const char *name;
	unsigned long set, clear;
} mount_flag_opts[] = {
	{ "ro", MS_RDONLY, 0 },		 { "rw", 0, MS_RDONLY },
	{ "nosuid", MS_NOSUID, 0 },	 { "suid", 0, MS_NOSUID },
	{ "nodev", MS_NODEV, 0 },	 { "dev", 0, MS_NODEV },
	{ "noexec", MS_NOEXEC, 0 },	 { "exec", 0, MS_NOEXEC },
	{ "sync", MS_SYNCHRONOUS, 0 },	 { "async", 0, MS_SYNCHRONOUS },
	{ "dirsync", MS_DIRSYNC, 0 },	 { "mand", MS_MANDLOCK, 0 },
	{ "nomand", 0, MS_MANDLOCK },	 { "noatime", MS_NOATIME, 0 },
	{ "atime", 0, MS_NOATIME },	 { "nodiratime", MS_NODIRATIME, 0 },
	{ "diratime", 0, MS_NODIRATIME }, { "relatime", MS_RELATIME, MS_STRICTATIME },
	{ "norelatime", 0, MS_RELATIME }, { "strictatime", MS_STRICTATIME, MS_RELATIME },
	{ "lazytime", MS_LAZYTIME, 0 },	 { "nolazytime", 0, MS_LAZYTIME },
	{ "nosymfollow", MS_NOSYMFOLLOW, 0 }, { "symfollow", 0, MS_NOSYMFOLLOW },
	{ "defaults", 0, 0 },
};

unsigned long ploop_mount_options(const char *opts, unsigned long flags, char *data, size_t len)
{
	size_t o = 0;

	if (len)
		data[0] = '\0';
	while (opts && *opts) {
		size_t n = strcspn(opts, ",");
		bool flag = false;

		for (size_t i = 0; i < sizeof(mount_flag_opts) / sizeof(mount_flag_opts[0]) && !flag; i++)
			if (strlen(mount_flag_opts[i].name) == n && !strncmp(opts, mount_flag_opts[i].name, n)) {
				flags = (flags & ~mount_flag_opts[i].clear) | mount_flag_opts[i].set;
				flag = true;
			}
		if (!flag && n && o + n + 2 <= len) {
			if (o)
				data[o++] = ',';
			memcpy(data + o, opts, n);
			o += n;
			data[o] = '\0';
		}
		opts += n;
		if (*opts == ',')
			opts++;
	}
	return flags;
}
