/* Small parsers shared by the library and the tool: sizes, GUIDs, path joining. */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
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
