/* Opening the files the daemon reads: config, keys, certificates. */
#ifndef LICPROXY_FILE_H
#define LICPROXY_FILE_H

#include <sys/stat.h>

int	file_open(const char *, struct stat *);

#endif
