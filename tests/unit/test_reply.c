/* test_reply.c - error bodies are JSON whatever their message holds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "worker.h"

static json_t *
body_json(const struct reply *rp)
{
	json_error_t e;

	return json_loadb(rp->body, rp->len, 0, &e);
}

static void
t_error_escapes(void **state)
{
	static const char msg[] = "records[0].\"x\\y\": bad\n\ttab \x01";
	struct reply	 rp;
	json_t		*j;

	(void)state;
	reply_init(&rp);
	reply_error(&rp, 400, "bad_request", msg, NULL);
	assert_int_equal(rp.code, 400);
	assert_non_null(j = body_json(&rp));
	assert_string_equal(json_string_value(json_object_get(j, "error")),
	    "bad_request");
	assert_string_equal(json_string_value(json_object_get(j, "message")),
	    msg);
	assert_null(json_object_get(j, "reason"));
	json_decref(j);
}

static void
t_error_reason_and_header(void **state)
{
	struct reply	 rp;
	json_t		*j;

	(void)state;
	reply_init(&rp);
	reply_error(&rp, 403, "key_rejected", "license key rejected", "revoked");
	reply_header(&rp, "Retry-After: %d\r\n", 5);
	assert_string_equal(rp.extra, "Retry-After: 5\r\n");
	assert_non_null(j = body_json(&rp));
	assert_string_equal(json_string_value(json_object_get(j, "reason")),
	    "revoked");
	json_decref(j);
	/* Key order as before: error, message, reason. */
	assert_memory_equal(rp.body, "{\"error\":\"key_rejected\",\"message\":", 34);
}

static void
t_init_is_internal(void **state)
{
	struct reply	 rp;
	json_t		*j;

	(void)state;
	reply_init(&rp);
	assert_int_equal(rp.code, 500);
	assert_null(rp.owned);
	assert_non_null(j = body_json(&rp));
	json_decref(j);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_error_escapes),
		cmocka_unit_test(t_error_reason_and_header),
		cmocka_unit_test(t_init_is_internal),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
