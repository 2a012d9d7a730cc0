/*
 * onecard_acl: refuse MQTT subscriptions that the ACL file does not allow.
 *
 * Mosquitto 2.0.11 checks an acl_file only when it delivers a message: every
 * SUBSCRIBE is granted ("FIXME - implement ACL subscription strings" in
 * src/security_default.c). A granted subscription that the read ACL then starves is
 * harmless for an ordinary filter, but not for a shared one: a terminal that joins
 * HQ ingest's group ($share/hq-ingest/...) is dealt every second record, which the
 * read ACL drops, while the sender already has its PUBACK.
 *
 * This plugin reads the SAME acl file (plugin_opt_acl_file) and answers only the
 * subscribe check; reads and writes are left to mosquitto's own acl_file check
 * (MOSQ_ERR_PLUGIN_DEFER). A filter is granted when a read rule of the client covers
 * every topic the filter can match, and no deny rule can match any of them:
 *
 *   - "topic read T" lines under "user U" apply to U; "pattern read T" lines to all,
 *     with %u (username) and %c (client id) replaced; a pattern that needs a name
 *     containing '+', '#' or '/' does not apply;
 *   - a shared subscription $share/G/F is granted only by a read rule written
 *     "$share/G/R" (or "$share/+/R") whose R covers F; no ordinary rule grants it;
 *   - '+' and '#' in the first level never cover a topic starting with '$'.
 *
 * Refused subscriptions get reason code 0x87 (MQTT 5) or 0x80 (MQTT 3.1.1).
 * SIGHUP re-reads the file; if it cannot be read then, the previous rules stay.
 * Built by broker_config/plugin.py against mosquitto-dev's headers.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define MAX_LEVELS 64

struct rule {
	struct rule *next;
	char *user;      /* NULL: a pattern, for every client */
	int access;      /* MOSQ_ACL_READ | MOSQ_ACL_WRITE, or MOSQ_ACL_NONE for deny */
	char *topic;
};

static mosquitto_plugin_id_t *plugin_id;
static char *acl_path;
static struct rule *rules;
static time_t log_second;
static int log_count;

static void free_rules(struct rule *r)
{
	while(r){
		struct rule *next = r->next;
		free(r->user);
		free(r->topic);
		free(r);
		r = next;
	}
}

static char *trim(char *s)
{
	char *end;
	while(isspace((unsigned char)*s)) s++;
	end = s + strlen(s);
	while(end > s && isspace((unsigned char)end[-1])) end--;
	*end = '\0';
	return s;
}

/* Parse "[read|write|readwrite|deny] TOPIC" as mosquitto does. */
static int parse_access(char *rest, int *access, char **topic)
{
	char *space = strpbrk(rest, " \t");
	*access = MOSQ_ACL_READ | MOSQ_ACL_WRITE;
	if(space){
		size_t n = (size_t)(space - rest);
		if(n == 4 && !strncmp(rest, "read", n)) *access = MOSQ_ACL_READ;
		else if(n == 5 && !strncmp(rest, "write", n)) *access = MOSQ_ACL_WRITE;
		else if(n == 9 && !strncmp(rest, "readwrite", n)) *access = MOSQ_ACL_READ | MOSQ_ACL_WRITE;
		else if(n == 4 && !strncmp(rest, "deny", n)) *access = MOSQ_ACL_NONE;
		else return MOSQ_ERR_INVAL;
		rest = trim(space);
	}
	if(!*rest) return MOSQ_ERR_INVAL;
	*topic = rest;
	return MOSQ_ERR_SUCCESS;
}

static int load_rules(const char *path, struct rule **out)
{
	FILE *f = fopen(path, "r");
	char line[1024], *user = NULL;
	struct rule *head = NULL, **tail = &head;
	int lineno = 0, rc = MOSQ_ERR_SUCCESS;

	if(!f){
		mosquitto_log_printf(MOSQ_LOG_ERR, "onecard_acl: cannot open %s", path);
		return MOSQ_ERR_UNKNOWN;
	}
	while(fgets(line, sizeof(line), f)){
		char *s = trim(line), *topic;
		int access;
		bool pattern;
		lineno++;
		if(!*s || *s == '#') continue;
		if(!strncmp(s, "user ", 5) || !strncmp(s, "user\t", 5)){
			free(user);
			user = strdup(trim(s + 5));
			continue;
		}
		pattern = !strncmp(s, "pattern ", 8) || !strncmp(s, "pattern\t", 8);
		if(!pattern && strncmp(s, "topic ", 6) && strncmp(s, "topic\t", 6)){
			mosquitto_log_printf(MOSQ_LOG_ERR, "onecard_acl: %s:%d: unknown line", path, lineno);
			rc = MOSQ_ERR_INVAL;
			break;
		}
		if(parse_access(trim(s + (pattern ? 8 : 6)), &access, &topic)){
			mosquitto_log_printf(MOSQ_LOG_ERR, "onecard_acl: %s:%d: bad rule", path, lineno);
			rc = MOSQ_ERR_INVAL;
			break;
		}
		struct rule *r = calloc(1, sizeof(*r));
		if(!r){ rc = MOSQ_ERR_NOMEM; break; }
		r->access = access;
		r->topic = strdup(topic);
		/* a topic line before any user line is for clients without a username */
		r->user = pattern ? NULL : strdup(user ? user : "");
		*tail = r;
		tail = &r->next;
	}
	fclose(f);
	free(user);
	if(rc){
		free_rules(head);
		return rc;
	}
	*out = head;
	return MOSQ_ERR_SUCCESS;
}

static int split(char *s, char **levels)
{
	int n = 0;
	char *p = s;
	for(;;){
		if(n == MAX_LEVELS) return -1;
		levels[n++] = p;
		p = strchr(p, '/');
		if(!p) return n;
		*p++ = '\0';
	}
}

/* Every topic that filter F can match is matched by rule R. */
static bool covers(const char *rule, const char *filter)
{
	char r[1024], f[1024], *rl[MAX_LEVELS], *fl[MAX_LEVELS];
	int nr, nf, i;
	if(strlen(rule) >= sizeof(r) || strlen(filter) >= sizeof(f)) return false;
	strcpy(r, rule);
	strcpy(f, filter);
	if((nr = split(r, rl)) < 0 || (nf = split(f, fl)) < 0) return false;
	for(i = 0; i < nf; i++){
		if(i == nr) return false;
		if(!strcmp(rl[i], "#")) return !(i == 0 && fl[0][0] == '$');
		if(!strcmp(fl[i], "#")) return false;
		if(!strcmp(rl[i], "+")){
			if(i == 0 && fl[0][0] == '$') return false;
			continue;
		}
		if(!strcmp(fl[i], "+") || strcmp(rl[i], fl[i])) return false;
	}
	/* "a/#" also matches "a" */
	return nr == nf || (nr == nf + 1 && !strcmp(rl[nf], "#"));
}

/* Some topic could be matched by both filter F and (deny) rule R. */
static bool overlaps(const char *rule, const char *filter)
{
	char r[1024], f[1024], *rl[MAX_LEVELS], *fl[MAX_LEVELS];
	int nr, nf, i;
	if(strlen(rule) >= sizeof(r) || strlen(filter) >= sizeof(f)) return true;
	strcpy(r, rule);
	strcpy(f, filter);
	if((nr = split(r, rl)) < 0 || (nf = split(f, fl)) < 0) return true;
	for(i = 0; i < nr && i < nf; i++){
		bool rw = !strcmp(rl[i], "#") || !strcmp(rl[i], "+");
		bool fw = !strcmp(fl[i], "#") || !strcmp(fl[i], "+");
		if(i == 0 && ((rw && fl[0][0] == '$') || (fw && rl[0][0] == '$'))) return false;
		if(!strcmp(rl[i], "#") || !strcmp(fl[i], "#")) return true;
		if(!rw && !fw && strcmp(rl[i], fl[i])) return false;
	}
	if(nr == nf) return true;
	if(nr == nf + 1) return !strcmp(rl[nf], "#");
	if(nf == nr + 1) return !strcmp(fl[nr], "#");
	return false;
}

/* The rule's topic with %u / %c filled in, or NULL if it cannot apply to this client. */
static char *expand(const struct rule *r, const char *username, const char *client_id)
{
	size_t len = 0, i;
	const char *t;
	char *out, *o;
	for(t = r->topic; *t; t++){
		if(t[0] == '%' && (t[1] == 'u' || t[1] == 'c')){
			const char *name = t[1] == 'u' ? username : client_id;
			if(!name || !*name || strpbrk(name, "+#/")) return NULL;
			len += strlen(name);
			t++;
		}else{
			len++;
		}
	}
	out = o = malloc(len + 1);
	if(!out) return NULL;
	for(t = r->topic; *t; t++){
		if(t[0] == '%' && (t[1] == 'u' || t[1] == 'c')){
			const char *name = t[1] == 'u' ? username : client_id;
			i = strlen(name);
			memcpy(o, name, i);
			o += i;
			t++;
		}else{
			*o++ = *t;
		}
	}
	*o = '\0';
	return out;
}

/* For "$share/G/F": point *group at G (length *glen) and return F; NULL otherwise. */
static const char *share_parts(const char *topic, const char **group, size_t *glen)
{
	const char *slash;
	if(strncmp(topic, "$share/", 7)) return NULL;
	*group = topic + 7;
	slash = strchr(*group, '/');
	if(!slash || slash == *group || !slash[1]) return NULL;
	*glen = (size_t)(slash - *group);
	return slash + 1;
}

static bool subscription_allowed(const char *filter, const char *username, const char *client_id)
{
	const char *group = NULL, *inner, *real;
	size_t glen = 0;
	bool allowed = false;
	struct rule *r;

	inner = share_parts(filter, &group, &glen);
	if(!strncmp(filter, "$share/", 7) && !inner) return false;  /* malformed share */
	real = inner ? inner : filter;

	for(r = rules; r; r = r->next){
		char *topic;
		const char *rgroup, *rinner;
		size_t rglen;
		if(r->user && strcmp(r->user, username ? username : "")) continue;
		topic = r->user ? strdup(r->topic) : expand(r, username, client_id);
		if(!topic) continue;
		rinner = share_parts(topic, &rgroup, &rglen);
		if(r->access == MOSQ_ACL_NONE){
			if(!rinner && overlaps(topic, real)){
				free(topic);
				return false;
			}
		}else if(r->access & MOSQ_ACL_READ){
			if(inner && rinner){
				if(((rglen == 1 && rgroup[0] == '+') || (rglen == glen && !strncmp(rgroup, group, glen)))
						&& covers(rinner, inner)){
					allowed = true;
				}
			}else if(!inner && !rinner && covers(topic, filter)){
				allowed = true;
			}
		}
		free(topic);
	}
	return allowed;
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	const char *username, *client_id;
	time_t now;
	(void)event;
	(void)userdata;

	if(ed->access != MOSQ_ACL_SUBSCRIBE) return MOSQ_ERR_PLUGIN_DEFER;
	username = mosquitto_client_username(ed->client);
	client_id = mosquitto_client_id(ed->client);
	if(subscription_allowed(ed->topic, username, client_id)) return MOSQ_ERR_SUCCESS;

	/* a client that retries in a loop must not fill the disk with our log lines */
	now = time(NULL);
	if(now != log_second){
		log_second = now;
		log_count = 0;
	}
	if(log_count++ < 10){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "onecard_acl: refused subscription to \"%s\" by %s",
				ed->topic, username ? username : "(no username)");
	}
	return MOSQ_ERR_ACL_DENIED;
}

static int on_reload(int event, void *event_data, void *userdata)
{
	struct rule *fresh = NULL;
	(void)event;
	(void)event_data;
	(void)userdata;
	if(load_rules(acl_path, &fresh)){
		mosquitto_log_printf(MOSQ_LOG_ERR, "onecard_acl: keeping the previous subscription rules");
		return MOSQ_ERR_SUCCESS;
	}
	free_rules(rules);
	rules = fresh;
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	int i;
	for(i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *options, int option_count)
{
	int i, rc;
	(void)userdata;
	plugin_id = identifier;
	for(i = 0; i < option_count; i++){
		if(!strcmp(options[i].key, "acl_file")){
			free(acl_path);
			acl_path = strdup(options[i].value);
		}
	}
	if(!acl_path){
		mosquitto_log_printf(MOSQ_LOG_ERR, "onecard_acl: plugin_opt_acl_file is required");
		return MOSQ_ERR_INVAL;
	}
	free_rules(rules);
	rules = NULL;
	rc = load_rules(acl_path, &rules);
	if(rc) return rc;
	rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, NULL);
	if(rc && rc != MOSQ_ERR_ALREADY_EXISTS) return rc;
	rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_RELOAD, on_reload, NULL, NULL);
	if(rc && rc != MOSQ_ERR_ALREADY_EXISTS) return rc;
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_RELOAD, on_reload, NULL);
	free_rules(rules);
	rules = NULL;
	free(acl_path);
	acl_path = NULL;
	return MOSQ_ERR_SUCCESS;
}
