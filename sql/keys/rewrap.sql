UPDATE data_keys SET wrapped_key = %(wrapped_key)s WHERE subject = %(subject)s;
