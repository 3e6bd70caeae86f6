/* /proc/self/mountinfo fields, for libploop and simfs. */
#include "mountinfo.h"

void mountinfo_unescape(const char *in, char *out, size_t len)
{
	size_t o = 0;

	for (const char *c = in; *c && o + 1 < len; c++) {
		if (c[0] == '\\' && c[1] >= '0' && c[1] <= '3' && c[2] && c[3]) {
			out[o++] = (char)((c[1] - '0') * 64 + (c[2] - '0') * 8 + (c[3] - '0'));
			c += 3;
		} else {
			out[o++] = *c;
		}
	}
	out[o] = '\0';
}
