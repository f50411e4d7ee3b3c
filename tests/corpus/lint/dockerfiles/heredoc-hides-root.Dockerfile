FROM nginx:1.27-alpine
COPY <<CONF /etc/nginx/nginx.conf
user nginx;
events {}
http { server { listen 8080; } }
CONF
USER root
