/* vzquota's time syntax: [[[dd:]hh:]mm:]ss, or N with a unit h, d, w, m (30 days), y (365 days). */
#include <ctype.h>

#include "internal.h"

static int parse_num(const char **s, uint64_t *v)
{
	uint64_t n = 0;

	if (!isdigit((unsigned char)**s))
		return -1;
	while (isdigit((unsigned char)**s)) {
		if (n > (UINT64_MAX - 9) / 10)
			return -1;
		n = n * 10 + (uint64_t)(**s - '0');
		(*s)++;
	}
	*v = n;
	return 0;
}

int vzq_parse_time(const char *s, int64_t *seconds)
{
	static const uint64_t unit_of[128] = {
		['h'] = 3600, ['H'] = 3600, ['d'] = 86400, ['D'] = 86400, ['w'] = 7 * 86400, ['W'] = 7 * 86400,
		['m'] = 30 * 86400, ['M'] = 30 * 86400, ['y'] = 365 * 86400, ['Y'] = 365 * 86400,
	};
	/* seconds per field, counted from the right: ss, mm, hh, dd; and each field's bound (days
	 * have none; nor has a lone field, plain seconds like vzctl's 259200, as upstream) */
	static const uint64_t scale[4] = { 1, 60, 3600, 86400 };
	static const uint64_t bound[4] = { 60, 60, 24, UINT64_MAX };
	uint64_t fields[4], total = 0;
	int n = 0;

	if (!s || !*s)
		return -EINVAL;
	for (;;) {
		if (n == 4 || parse_num(&s, &fields[n]))
			return -EINVAL;
		n++;
		if (*s == ':') {
			s++;
			continue;
		}
		break;
	}
	if (*s) {
		unsigned char u = (unsigned char)*s;
		if (n != 1 || u >= 128 || !unit_of[u] || s[1])
			return -EINVAL;
		if (fields[0] > (uint64_t)INT64_MAX / unit_of[u])
			return -EINVAL;
		*seconds = (int64_t)(fields[0] * unit_of[u]);
		return 0;
	}
	for (int i = 0; i < n; i++) {
		int pos = n - 1 - i;	/* 0 = seconds */
		uint64_t v = fields[i];

		if (n > 1 && v >= bound[pos])
			return -EINVAL;
		if (v > ((uint64_t)INT64_MAX - total) / scale[pos])
			return -EINVAL;
		total += v * scale[pos];
	}
	*seconds = (int64_t)total;
	return 0;
}
