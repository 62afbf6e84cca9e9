/*
 * Reply routing and access checks for the sandbox's IoT data plane (mosquitto 2.0 plugin, API v5).
 *
 * AWS IoT answers a device's $aws/... request on the same connection only. A plain broker fans
 * the answer out to every subscriber, so devices sharing the claim certificate would see (and
 * could take) each other's keys. This plugin:
 *   - rewrites a device's publish on $aws/<x> to fp/req/<certificate identity>/<client id>/$aws/<x>,
 *     which only the fleet-provisioning service reads;
 *   - delivers the service's fp/resp/<client id>/<topic> only to that client, on <topic>, and
 *     drops the wrapper.
 * Only the service (client id and certificate identity both "service_client_id") may answer.
 *
 * Topic rules: AWS IoT runs its rules on every device message. The plugin gives the service a copy
 * of each device publish outside $aws/ as fp/msg/<certificate identity>/<client id>/<topic> (the
 * service evaluates the rules, with clientid() and principal() of the sender), and delivers the
 * service's fp/pub/<qos>/<topic> (the iot-data Publish API) to the topic's subscribers, each
 * subject to its own receive rules.
 *
 * Disconnecting: AWS IoT drops a connection whose certificate stops being ACTIVE (revoked,
 * deactivated, deleted). The broker's CRL only refuses new TLS handshakes, so the service, which
 * sees the registry change, publishes fp/kick/<certificate identity> and the plugin disconnects
 * every client with that identity (the MQTT user name set at CONNECT); no rules file remains, so
 * a reconnect is refused too.
 *
 * A certificate's identity is its subject CN. At CONNECT the plugin reads it from the connection's
 * certificate and makes it the client's MQTT user name, whatever user name the client sent (or
 * refuses the CONNECT); later checks read the user name, which outlives the TLS session (mosquitto
 * checks a client's will and its offline session's queued messages after the socket is closed).
 *
 * Access checks: what a certificate may do is what its IoT policies allow, written by the sandbox
 * as one file per certificate identity in "rules_dir" (lines "client <pattern>", "publish <filter>",
 * "receive <filter>", "subscribe <filter>"). The file is read at each check, so a registration is in force the moment the
 * sandbox has written it (a reload signal can be lost while mosquitto is reloading; a file cannot).
 * No file, a client id no "client" line allows, or no matching rule: denied. The "client" lines are
 * also checked at CONNECT (iot:Connect), before mosquitto hands the client id's session to the new
 * connection: a certificate cannot take over a session its policies do not grant (as in AWS IoT,
 * where a refused CONNECT leaves the connected client alone).
 */
#include <fnmatch.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#include <openssl/x509.h>

#define REQUEST_PREFIX "fp/req/"
#define RESPONSE_PREFIX "fp/resp/"
#define KICK_PREFIX "fp/kick/"
#define MESSAGE_PREFIX "fp/msg/"
#define PUBLISH_PREFIX "fp/pub/"

static mosquitto_plugin_id_t *plugin_id = NULL;
static char service_id[128] = "sandbox-fleet-service";
static char rules_dir[1024] = "";

static bool safe_identity(const char *identity);

static bool starts_with(const char *text, const char *prefix)
{
	return strncmp(text, prefix, strlen(prefix)) == 0;
}

/* The subject CN of the client's certificate (false without one, or when it does not fit whole:
 * OpenSSL truncates to the buffer, and a truncated name could be another certificate's). */
static bool identity_of(struct mosquitto *client, char *identity, size_t size)
{
	X509 *certificate = mosquitto_client_certificate(client);
	int length;

	if (!certificate) return false;
	length = X509_NAME_get_text_by_NID(X509_get_subject_name(certificate), NID_commonName, identity, (int)size);
	X509_free(certificate);
	return length > 0 && (size_t)length < size - 1 && strlen(identity) == (size_t)length;
}

/* The user name is the certificate's identity, set at CONNECT (on_basic_auth). */
static bool is_service(struct mosquitto *client)
{
	const char *id = mosquitto_client_id(client);
	const char *user = mosquitto_client_username(client);
	return id && user && strcmp(id, service_id) == 0 && strcmp(user, service_id) == 0;
}

static int answer(struct mosquitto_evt_message *message)
{
	const char *rest = message->topic + strlen(RESPONSE_PREFIX);
	const char *slash = strchr(rest, '/');
	char target[256];
	size_t length;

	if (!slash || slash == rest) return MOSQ_ERR_ACL_DENIED;
	length = (size_t)(slash - rest);
	if (length >= sizeof(target)) return MOSQ_ERR_ACL_DENIED;
	memcpy(target, rest, length);
	target[length] = '\0';
	mosquitto_broker_publish_copy(target, slash + 1, (int)message->payloadlen, message->payload,
			message->qos, false, NULL);
	return MOSQ_ERR_ACL_DENIED; /* the wrapper itself goes nowhere */
}

/* fp/pub/<qos>/<topic>: published to the topic as the broker (every subscriber's receive rules apply). */
static int publish_for_service(struct mosquitto_evt_message *message)
{
	const char *rest = message->topic + strlen(PUBLISH_PREFIX);

	if ((rest[0] == '0' || rest[0] == '1') && rest[1] == '/' && rest[2] && !strpbrk(rest + 2, "+#")) {
		mosquitto_broker_publish_copy(NULL, rest + 2, (int)message->payloadlen, message->payload, rest[0] - '0',
				false, NULL);
	}
	return MOSQ_ERR_ACL_DENIED; /* the wrapper itself goes nowhere */
}

/* A copy of a device's message for the service's topic rules; the message itself goes on as usual. */
static int copy_for_rules(struct mosquitto_evt_message *message, const char *identity, const char *client_id)
{
	size_t length = strlen(MESSAGE_PREFIX) + strlen(identity) + 1 + strlen(client_id) + 1 + strlen(message->topic) + 1;
	char *topic = mosquitto_malloc(length);

	if (!topic) return MOSQ_ERR_NOMEM;
	snprintf(topic, length, "%s%s/%s/%s", MESSAGE_PREFIX, identity, client_id, message->topic);
	mosquitto_broker_publish_copy(service_id, topic, (int)message->payloadlen, message->payload, 0, false, NULL);
	mosquitto_free(topic);
	return MOSQ_ERR_SUCCESS;
}

/* fp/kick/<identity>: every connection of that certificate identity is closed, without its will
 * (AWS sends a will only when a connection is lost, not when IoT itself closes it). */
static int kick(struct mosquitto_evt_message *message)
{
	const char *identity = message->topic + strlen(KICK_PREFIX);

	if (safe_identity(identity) && strcmp(identity, service_id) != 0) {
		mosquitto_kick_client_by_username(identity, false);
	}
	return MOSQ_ERR_ACL_DENIED; /* the request itself goes nowhere */
}

static int on_message(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_message *message = event_data;
	const char *client_id = mosquitto_client_id(message->client);
	const char *identity = mosquitto_client_username(message->client);
	char *topic;
	size_t length;

	(void)event;
	(void)userdata;
	if (!client_id || !message->topic) return MOSQ_ERR_SUCCESS;
	if (is_service(message->client)) {
		if (starts_with(message->topic, KICK_PREFIX)) return kick(message);
		if (starts_with(message->topic, PUBLISH_PREFIX)) return publish_for_service(message);
		return starts_with(message->topic, RESPONSE_PREFIX) ? answer(message) : MOSQ_ERR_SUCCESS;
	}
	if (starts_with(message->topic, "fp/")) {
		return MOSQ_ERR_ACL_DENIED; /* nobody else may forge requests, answers or disconnections */
	}
	if (strchr(client_id, '/')) return MOSQ_ERR_SUCCESS;
	if (!identity || !safe_identity(identity)) return MOSQ_ERR_ACL_DENIED; /* set at CONNECT: never missing */
	if (!starts_with(message->topic, "$aws/")) return copy_for_rules(message, identity, client_id);

	/* fp/req/<certificate identity>/<client id>/<topic>: the service names the requesting certificate
	 * (the pre-provisioning hook's claimCertificateId) and answers the client id. */
	length = strlen(REQUEST_PREFIX) + strlen(identity) + 1 + strlen(client_id) + 1 + strlen(message->topic) + 1;
	topic = mosquitto_malloc(length);
	if (!topic) return MOSQ_ERR_NOMEM;
	snprintf(topic, length, "%s%s/%s/%s", REQUEST_PREFIX, identity, client_id, message->topic);
	mosquitto_free(message->topic);
	message->topic = topic;
	return MOSQ_ERR_SUCCESS;
}

/* One topic level: its length, and where the next starts (NULL after the last). */
static size_t level(const char *text, const char **next)
{
	const char *slash = strchr(text, '/');
	*next = slash ? slash + 1 : NULL;
	return slash ? (size_t)(slash - text) : strlen(text);
}

/* True when every topic the filter (or plain topic) can name is matched by the rule (exported for tests). */
bool rule_covers(const char *rule, const char *filter)
{
	if (filter[0] == '$' && (rule[0] == '+' || rule[0] == '#')) return false; /* MQTT: wildcards skip $ topics */
	while (true) {
		const char *rule_next, *filter_next;
		size_t rule_length = level(rule, &rule_next);
		size_t filter_length = level(filter, &filter_next);

		if (rule_length == 1 && rule[0] == '#') return !rule_next; /* '#' is a wildcard only as the last level */
		if (filter_length == 1 && (filter[0] == '#' || filter[0] == '+')) {
			if (!(rule_length == 1 && rule[0] == '+' && filter[0] == '+')) return false;
		} else if (!(rule_length == 1 && rule[0] == '+')) {
			if (rule_length != filter_length || strncmp(rule, filter, rule_length) != 0) return false;
		}
		if (!rule_next && !filter_next) return true;
		if (!filter_next) return strcmp(rule_next, "#") == 0; /* "a/#" also matches "a" */
		if (!rule_next) return false;
		rule = rule_next;
		filter = filter_next;
	}
}

static bool safe_identity(const char *identity)
{
	if (!identity[0] || identity[0] == '.') return false;
	for (const char *c = identity; *c; c++) {
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '-' ||
				*c == '_' || *c == '.')) {
			return false;
		}
	}
	return true;
}

/* Whether the identity's rules allow this client id and, unless topic is NULL (CONNECT), this access. */
static bool allowed(const char *identity, const char *client_id, int access, const char *topic)
{
	char path[1400], line[1024];
	bool client_allowed = false, topic_allowed = topic == NULL;
	FILE *rules;

	if (!rules_dir[0] || !safe_identity(identity)) return false;
	if (snprintf(path, sizeof(path), "%s/%s", rules_dir, identity) >= (int)sizeof(path)) return false;
	rules = fopen(path, "r");
	if (!rules) return false;
	while (fgets(line, sizeof(line), rules)) {
		if (!strchr(line, '\n') && !feof(rules)) { /* a line longer than the buffer: trust nothing */
			fclose(rules);
			return false;
		}
		line[strcspn(line, "\r\n")] = '\0';
		if (starts_with(line, "client ")) {
			client_allowed = client_allowed || fnmatch(line + 7, client_id, FNM_NOESCAPE) == 0;
		} else if (!topic) {
			continue;
		} else if (starts_with(line, "publish ")) {
			topic_allowed = topic_allowed || (access == MOSQ_ACL_WRITE && rule_covers(line + 8, topic));
		} else if (starts_with(line, "receive ")) {
			topic_allowed = topic_allowed || (access == MOSQ_ACL_READ && rule_covers(line + 8, topic));
		} else if (starts_with(line, "subscribe ")) {
			topic_allowed = topic_allowed || (access == MOSQ_ACL_SUBSCRIBE && rule_covers(line + 10, topic));
		}
	}
	fclose(rules);
	return client_allowed && topic_allowed;
}

/* CONNECT (mosquitto asks this before it looks for the client id's existing session): the client id
 * must be one the certificate's rules allow; the certificate's identity becomes the user name. */
static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *auth = event_data;
	const char *client_id = mosquitto_client_id(auth->client);
	char identity[256];
	bool accepted;

	(void)event;
	(void)userdata;
	if (!client_id || !identity_of(auth->client, identity, sizeof(identity))) return MOSQ_ERR_AUTH;
	if (strcmp(identity, service_id) == 0 || strcmp(client_id, service_id) == 0) {
		accepted = strcmp(identity, service_id) == 0 && strcmp(client_id, service_id) == 0;
	} else {
		accepted = allowed(identity, client_id, 0, NULL);
	}
	if (!accepted || mosquitto_set_username(auth->client, identity) != MOSQ_ERR_SUCCESS) return MOSQ_ERR_AUTH;
	return MOSQ_ERR_SUCCESS;
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *check = event_data;
	const char *client_id = mosquitto_client_id(check->client);
	const char *identity = mosquitto_client_username(check->client);

	(void)event;
	(void)userdata;
	if (!check->topic) return MOSQ_ERR_ACL_DENIED;
	if (is_service(check->client)) return starts_with(check->topic, "fp/") ? MOSQ_ERR_SUCCESS : MOSQ_ERR_ACL_DENIED;
	if (check->access == MOSQ_ACL_UNSUBSCRIBE) return MOSQ_ERR_SUCCESS;
	if (!client_id || !identity) return MOSQ_ERR_ACL_DENIED;
	/* A client id with a topic separator or wildcard cannot be routed (fp/req/<client id>/...): refuse it. */
	if (client_id[0] == '\0' || strpbrk(client_id, "/+#")) return MOSQ_ERR_ACL_DENIED;
	return allowed(identity, client_id, check->access, check->topic) ? MOSQ_ERR_SUCCESS : MOSQ_ERR_ACL_DENIED;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for (int i = 0; i < supported_version_count; i++) {
		if (supported_versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata, struct mosquitto_opt *options,
		int option_count)
{
	(void)userdata;
	plugin_id = identifier;
	for (int i = 0; i < option_count; i++) {
		if (strcmp(options[i].key, "service_client_id") == 0) {
			snprintf(service_id, sizeof(service_id), "%s", options[i].value);
		} else if (strcmp(options[i].key, "rules_dir") == 0) {
			snprintf(rules_dir, sizeof(rules_dir), "%s", options[i].value);
		}
	}
	if (mosquitto_callback_register(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, NULL) != MOSQ_ERR_SUCCESS ||
			mosquitto_callback_register(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL) != MOSQ_ERR_SUCCESS) {
		return MOSQ_ERR_UNKNOWN;
	}
	return mosquitto_callback_register(plugin_id, MOSQ_EVT_MESSAGE, on_message, NULL, NULL);
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
	return mosquitto_callback_unregister(plugin_id, MOSQ_EVT_MESSAGE, on_message, NULL);
}
