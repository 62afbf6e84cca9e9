/*
 * Reply routing for the sandbox's IoT data plane (mosquitto 2.0 plugin, API v5).
 *
 * AWS IoT answers a device's $aws/... request on the same connection only. A plain broker fans
 * the answer out to every subscriber, so devices sharing the claim certificate would see (and
 * could take) each other's keys. This plugin:
 *   - rewrites a device's publish on $aws/<x> to fp/req/<client id>/$aws/<x>, which only the
 *     fleet-provisioning service reads;
 *   - delivers the service's fp/resp/<client id>/<topic> only to that client, on <topic>, and
 *     drops the wrapper.
 * Only the service (client id and certificate identity both "service_client_id") may answer.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define REQUEST_PREFIX "fp/req/"
#define RESPONSE_PREFIX "fp/resp/"

static mosquitto_plugin_id_t *plugin_id = NULL;
static char service_id[128] = "sandbox-fleet-service";

static bool starts_with(const char *text, const char *prefix)
{
	return strncmp(text, prefix, strlen(prefix)) == 0;
}

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

static int on_message(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_message *message = event_data;
	const char *client_id = mosquitto_client_id(message->client);
	char *topic;
	size_t length;

	(void)event;
	(void)userdata;
	if (!client_id || !message->topic) return MOSQ_ERR_SUCCESS;
	if (is_service(message->client)) {
		return starts_with(message->topic, RESPONSE_PREFIX) ? answer(message) : MOSQ_ERR_SUCCESS;
	}
	if (starts_with(message->topic, RESPONSE_PREFIX) || starts_with(message->topic, REQUEST_PREFIX)) {
		return MOSQ_ERR_ACL_DENIED; /* nobody else may forge requests or answers */
	}
	if (!starts_with(message->topic, "$aws/") || strchr(client_id, '/')) return MOSQ_ERR_SUCCESS;

	length = strlen(REQUEST_PREFIX) + strlen(client_id) + 1 + strlen(message->topic) + 1;
	topic = mosquitto_malloc(length);
	if (!topic) return MOSQ_ERR_NOMEM;
	snprintf(topic, length, "%s%s/%s", REQUEST_PREFIX, client_id, message->topic);
	mosquitto_free(message->topic);
	message->topic = topic;
	return MOSQ_ERR_SUCCESS;
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
		}
	}
	return mosquitto_callback_register(plugin_id, MOSQ_EVT_MESSAGE, on_message, NULL, NULL);
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	return mosquitto_callback_unregister(plugin_id, MOSQ_EVT_MESSAGE, on_message, NULL);
}
