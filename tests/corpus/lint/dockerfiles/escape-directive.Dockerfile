# escape=`
FROM mcr.microsoft.com/windows/nanoserver:ltsc2022
ENV APP_HOME=C:\app `
    API_TOKEN=s3cr3t-value
USER ContainerUser
